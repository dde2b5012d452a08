"""Runs the cells of a matrix through an executor and records every end.

Only this process writes the database: executors run cells (each in its own
worker process, see worker_process) and hand back how each ended.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from evalq.cell import BASELINE_VARIANT, Cell
from evalq.executors import LocalExecutor
from evalq.outcome import CellOutcome, Status
from evalq.store import Store
from evalq.store.db import HEARTBEAT_S, Claim, Superseded

# How often a run whose remaining cells are held by another run looks again: it
# takes over a cell whose owner died (its pid gone, or its heartbeat stale).
TAKEOVER_POLL_S = 2.0

@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0  # already stored
    elsewhere: int = 0  # taken by another orchestrator on the same database
    ran: dict[str, int] = field(default_factory=dict)
    keys_ran: list[str] = field(default_factory=list)  # cells run (or stored skipped) by this run
    outcomes: dict[str, CellOutcome] = field(default_factory=dict)  # cell key → how it ended, for the cells this run took
    superseded: list[str] = field(default_factory=list)  # keys another run took over from this one: not recorded here

    def count(self, outcome: CellOutcome) -> None:
        self.ran[outcome.status.value] = self.ran.get(outcome.status.value, 0) + 1


def should_run(status: str | None, force: bool, rerun_failed: bool) -> bool:
    if force or status is None or status == Status.running:  # running: a previous orchestrator died mid-cell
        return True
    if status == Status.ok:
        return False
    return rerun_failed


def run_cells(cells: list[Cell], store: Store, force: bool = False, rerun_failed: bool = False,
              echo: bool = False, console: Any = None, worker_module: str = "evalq.worker",
              wont_fit: dict[str, CellOutcome] | None = None, executor: Any = None) -> RunSummary:
    """Run each cell not stored ok, through `executor` (default: one at a time
    here). `wont_fit`: cell key → the planner's outcome for cells predicted not
    to fit; they are stored `skipped` with the predicted need instead of
    running into an OOM."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    executor = executor or LocalExecutor(echo, worker_module)
    summary = RunSummary(total=len(cells))
    wanted = lambda status: should_run(status, force, rerun_failed)  # noqa: E731
    todo = [c for c in cells if wanted(store.status(c.key))]
    summary.skipped = len(cells) - len(todo)
    if summary.skipped:
        console.log(f"{summary.skipped} of {len(cells)} cells already stored (skipped; --force or --rerun-failed to run again)")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    pending = list(enumerate(todo, 1))
    watched: list[tuple[int, Cell]] = []  # running under another live `evalq run` on this database
    claims: dict[str, Claim] = {}  # what this run holds: recorded only while it still holds it
    try:
        with Progress(*columns, console=console, transient=False) as progress, heartbeat(store):
            bar = progress.add_task("cells", total=len(todo))
            while pending or executor.in_flight() or watched:
                if not pending and not executor.in_flight():
                    time.sleep(TAKEOVER_POLL_S)  # only others' cells left: finished there, or taken over here
                    pending, watched = watched, []
                while pending and executor.in_flight() < executor.slots:
                    i, cell = pending.pop(0)
                    label = escape(f"[{i}/{len(todo)}] {cell.name}")
                    # another `evalq run` on this database may have taken or finished it meanwhile
                    claim = store.claim(cell, wanted)
                    if not claim:
                        if store.status(cell.key) == Status.running:
                            watched.append((i, cell))  # its run may die: then this one takes it over
                            continue
                        summary.elsewhere += 1
                        progress.advance(bar)
                        continue
                    summary.keys_ran.append(cell.key)
                    claims[cell.key] = claim
                    if wont_fit and cell.key in wont_fit:
                        store.record(cell, wont_fit[cell.key], claim=claims.pop(cell.key))
                        summary.outcomes[cell.key] = wont_fit[cell.key]
                        summary.count(wont_fit[cell.key])
                        console.log(escape(f"{cell.name}: skipped: {wont_fit[cell.key].error}"))
                        progress.advance(bar)
                        continue
                    progress.update(bar, description=f"{label} · starting")
                    cell = with_baseline_scores(cell, cells, store)
                    executor.start(cell, lambda p, label=label: progress.update(bar, description=f"{label} · {escape(p)}"))
                if not executor.in_flight():
                    continue
                for cell, end in executor.wait():
                    progress.advance(bar)
                    try:
                        store.record(cell, end.outcome, end.samples, end.log_tail, end.wall_seconds, claims.pop(cell.key))
                    except Superseded as exc:
                        summary.superseded.append(cell.key)
                        console.log(escape(f"{cell.name}: {end.status} in {end.wall_seconds:.0f} s, superseded: {exc}"))
                        continue
                    summary.outcomes[cell.key] = end.outcome
                    summary.count(end.outcome)
                    note = f": {end.outcome.error}" if not end.outcome.ok else ""
                    console.log(escape(f"{cell.name}: {end.status} in {end.wall_seconds:.0f} s{note}"))
    finally:
        executor.close()
    return summary


def with_baseline_scores(cell: Cell, cells: list[Cell], store: Store) -> Cell:
    """eval.until_decided: the quantized cell carries its fp16 cell's per-document scores
    (when that cell is stored ok), so it can stop once its gates are decided, and those of
    the fp16 cells of the models its equal-cost questions name (eval.until_decided.compare)."""
    settings = cell.eval.until_decided
    if settings is None or cell.variant == BASELINE_VARIANT:
        return cell
    from evalq.measure.until_decided import by_doc_id, headline_metric

    def scores(model: str) -> dict[str, dict[str, float]] | None:
        base = next((c for c in cells if c.model.display_name == model and c.variant == BASELINE_VARIANT), None)
        if base is None or store.status(base.key) != Status.ok:
            return None
        return {t.task: by_doc_id(store.samples(base.key, t.task), headline_metric(t)) for s in cell.suites for t in s.tasks}

    rivals = {q.against: scores(q.against) for q in settings.compare or [] if q.model == cell.model.display_name}
    return cell.model_copy(update={"baseline_scores": scores(cell.model.display_name),
                                   "rival_scores": {k: v for k, v in rivals.items() if v is not None} or None})


@contextmanager
def heartbeat(store: Store) -> Iterator[None]:
    """While the block runs, mark this run's running cells alive every HEARTBEAT_S, so that
    runs on other machines sharing the database leave them alone (and take them over once
    the beats stop)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                store.heartbeat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the run goes on
                pass

    thread = threading.Thread(target=beat, name="evalq-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
