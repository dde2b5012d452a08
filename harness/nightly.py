"""`evalq nightly`: the matrix re-checked unattended, compared with the night before.

1. a lock (fcntl, released by the kernel if the process dies): a second
   nightly on the same database exits 0 and says so;
2. an incremental run: cells whose key changed (new revision, library
   versions, options) or that did not end ok last time; `full` re-runs all;
3. tonight's figures of each (model, variant), copied into the history;
4. the leaderboard rebuilt, its history page included;
5. the comparison with the previous night (drift.py) as report.md and
   report.json; the exit code is 1 when a figure regressed or a cell fails.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from evalq.drift import DEFAULT_ALPHA, CellDrift, compare_nights, figures_of

EXIT_OK, EXIT_REGRESSION = 0, 1


class Busy(RuntimeError):
    """Another nightly holds the lock."""


@contextmanager
def nightly_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise Busy(f"another evalq nightly holds {path} ({fh.read().strip() or 'pid unknown'}); nothing to do") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(db: str, site: Path) -> Path:
    """Next to a SQLite database (the thing two nightlies would fight over); else in the site folder."""
    from evalq.store.db import database_url

    url = database_url(db)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///") + ".nightly.lock")
    return site / ".evalq-nightly.lock"


@dataclass
class Report:
    run_id: int
    previous_run_id: int | None
    matrix: str
    started_at: str
    finished_at: str
    ran: dict[str, int]
    reused: int
    cells: list[CellDrift]
    alpha: float

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if any(c.alert for c in self.cells) else EXIT_OK

    @property
    def changed(self) -> list[CellDrift]:
        """Cells whose numbers or status moved beyond noise."""
        return [c for c in self.cells if c.changes or c.status in ("regression", "failing", "fixed")]

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "previous_run_id": self.previous_run_id, "matrix": self.matrix,
                "started_at": self.started_at, "finished_at": self.finished_at, "exit_code": self.exit_code,
                "alpha": self.alpha, "ran": self.ran, "reused": self.reused,
                "changed": [f"{c.model} · {c.variant}" for c in self.changed],
                "regressions": [f"{c.model} · {c.variant}" for c in self.cells if c.alert],
                "cells": [c.as_dict() for c in self.cells]}

    def markdown(self) -> str:
        def fmt(v: Any) -> str:
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        before = f"night {self.previous_run_id}" if self.previous_run_id else "no previous night"
        lines = [f"# evalq nightly {self.run_id}: {self.matrix}", "",
                 f"{self.started_at} → {self.finished_at} · compared with {before} · α = {self.alpha:g}", "",
                 f"Cells run tonight: {sum(self.ran.values())} ({', '.join(f'{n} {s}' for s, n in sorted(self.ran.items())) or 'none'}); "
                 f"reused from earlier nights: {self.reused}.", ""]
        alerts = [c for c in self.cells if c.alert]
        lines.append(f"**{'REGRESSION' if alerts else 'OK'}**: {len(alerts)} cell(s) regressed or failing, "
                     f"{len(self.changed)} changed beyond noise.")
        lines.append("")
        if self.changed:
            lines += ["## Changed beyond noise", "", "| cell | status | figure | before | after | change | test |",
                      "| --- | --- | --- | ---: | ---: | ---: | --- |"]
            for c in self.changed:
                name = f"{c.model} · {c.variant}"
                if not c.changes:
                    lines.append(f"| {name} | {c.status} | status | | | | {(c.error or '')[:120]} |")
                for ch in c.changes:
                    d = ch.as_dict()
                    rel = f"{100 * d['relative']:+.1f} %" if d["relative"] is not None else ""
                    lines.append(f"| {name} | {ch.verdict} | {ch.metric} | {fmt(ch.before)} | {fmt(ch.after)} | {rel} | {ch.test} |")
            lines.append("")
        reran = [c for c in self.cells if c.reran]
        if reran:
            lines += ["## Re-run tonight", ""]
            for c in reran:
                why = "; ".join(c.why) if c.why else ("first night" if c.key_before is None else "failed or unfinished last time, or --full")
                lines.append(f"- {c.model} · {c.variant}: {c.status} — {why}")
            lines.append("")
        unjudged = [(c, u) for c in self.cells for u in c.unjudged]
        if unjudged:
            lines += ["## Moved, but not judged (no noise estimate, or too few repeats)", ""]
            lines += [f"- {c.model} · {c.variant}: {u}" for c, u in unjudged]
            lines.append("")
        return "\n".join(lines)


def run_nightly(prepared: Any, db: str, site: Path, full: bool = False, alpha: float = DEFAULT_ALPHA,
                console: Any = None, log: Callable[[str], None] = print, executor: str = "local",
                address: str | None = None) -> Report:
    """Run the nightly (the caller holds its lock) and return its report.
    `prepared`: api.prepare's matrix (or a matrix file); the cells run as `api.run`
    runs them, with failed ones always re-run (`full`: every cell)."""
    from datetime import datetime, timezone

    from evalq import api
    from evalq.leaderboard.render import build_from_db
    from evalq.record import records_of
    from evalq.store import Store

    now = lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")  # noqa: E731
    if not isinstance(prepared, api.Prepared):
        prepared = api.prepare(prepared)
    matrix, cells = prepared.matrix, prepared.cells
    store = Store(db)
    previous = store.nightly_runs(matrix.name)
    previous_run = previous[-1] if previous else None
    run_id = store.start_nightly(matrix.name)
    started = now()
    status = "failed"
    try:
        summary = api.run(prepared, store, force=full, rerun_failed=True, executor=executor, address=address,
                          console=console, log=log)
        keys = {c.key for c in cells}
        stored = store.cells(matrix.name)  # tonight's cells and the older keys they replaced
        rows = [r for r in stored if r.key in keys]
        loader = store.sample_loader()
        tonight = {(rec.model, rec.variant): figures_of(rec) for rec in records_of(rows, loader)}
        before: dict[tuple[str, str], dict] = {}
        if previous_run is not None:
            before = {(c.model, c.variant): {**c.figures, "key": c.cell_key} for c in store.nightly_cells([previous_run.id])}
        cell_json = {r.key: r.cell for r in stored}
        drift = compare_nights(before, tonight, set(summary.keys_ran), cell_json.get, loader, alpha)
        report = Report(run_id, previous_run.id if previous_run else None, matrix.name, started, now(),
                        dict(summary.ran), summary.skipped, drift, alpha)
        status = "regression" if report.exit_code else "ok"
        store.finish_nightly(run_id, status, {k: v for k, v in report.as_dict().items() if k != "cells"},
                             [(m, v, f["key"], f["key"] in summary.keys_ran, f) for (m, v), f in tonight.items()])
    finally:
        if status == "failed":  # the nightly itself broke: keep the row, out of the history
            store.finish_nightly(run_id, "failed", {"error": "the nightly did not finish"}, [])
    site.mkdir(parents=True, exist_ok=True)
    build_from_db(db, site)
    for folder in (site, site / "nightly" / str(run_id)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(report.markdown(), encoding="utf-8")
        (folder / "report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    log(f"nightly {run_id}: {status}; report {site / 'report.md'}")
    return report
