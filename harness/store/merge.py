"""Fold results databases into one (`evalq merge SOURCE… --into DB`).

Cells are matched by key. A cell the target lacks is copied with its
per-sample records; one it holds with the same figures is skipped (the same
run reached both, or the same source merged twice); one it holds with other
figures is a conflict: reported with what differs, never overwritten. Nightly
runs come along with their cells, matched by (matrix, started_at). Cells still
`running` in a source are left there: they are not results yet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from evalq.outcome import Status
from evalq.store.db import Store, StoreError
from evalq.store.tables import CellRow, NightlyCell, NightlyRun, SampleRow

# What a cell measured: two rows under one key that differ here are two different results.
FIGURES = ("status", "error", "dtype", "weights_bytes", "peak_memory_bytes", "ttft_ms", "decode_tokens_per_s", "metrics",
           "result")
_COPIED = FIGURES + ("key", "matrix", "model", "variant", "revision", "cell", "attempts", "started_at", "finished_at",
                     "wall_seconds", "load_seconds", "prepare_seconds", "log_tail", "owner")


@dataclass
class Conflict:
    key: str
    name: str  # model · variant
    source: str
    fields: list[str]  # the figures that differ


@dataclass
class SourceReport:
    source: str  # as it may be shown: no password
    added: int = 0
    identical: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    running: int = 0  # not finished in the source: left out
    samples: int = 0  # per-task sample records copied
    nightly_added: int = 0
    nightly_identical: int = 0


@dataclass
class MergeReport:
    into: str
    sources: list[SourceReport]

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for s in self.sources for c in s.conflicts]


def differing(a: CellRow, b: CellRow) -> list[str]:
    return [f for f in FIGURES if getattr(a, f) != getattr(b, f)]


def merge(sources: list[Store], target: Store, progress: Callable[[str], None] = lambda text: None) -> MergeReport:
    same = [src.shown for src in sources if src.url == target.url]
    if same:
        raise StoreError(f"{same[0]} is the database merged into")
    return MergeReport(target.shown, [_merge_one(src, target, progress) for src in sources])


def _merge_one(src: Store, target: Store, progress: Callable[[str], None]) -> SourceReport:
    out = SourceReport(src.shown)
    rows = src.cells()
    with Session(target.engine) as t, t.begin():
        for i, row in enumerate(rows):
            if row.status == Status.running:
                out.running += 1
                continue
            mine = t.get(CellRow, row.key)
            if mine is None:
                t.add(CellRow(**{f: getattr(row, f) for f in _COPIED}))
                t.flush()  # the cell before its samples (foreign key)
                out.samples += _copy_samples(src, t, row.key)
                out.added += 1
            elif fields := differing(mine, row):
                out.conflicts.append(Conflict(row.key, f"{row.model} · {row.variant}", src.shown, fields))
            else:
                out.identical += 1
            if (i + 1) % 100 == 0:
                progress(f"{src.shown}: {i + 1}/{len(rows)} cells")
        _merge_nightly(src, t, out)
    return out


def _copy_samples(src: Store, t: Session, key: str) -> int:
    with Session(src.engine) as s:
        found = list(s.scalars(select(SampleRow).where(SampleRow.cell_key == key)))
        for sample in found:
            t.add(SampleRow(cell_key=key, task=sample.task, n=sample.n, data=sample.data))
    return len(found)


def _merge_nightly(src: Store, t: Session, out: SourceReport) -> None:
    have = {(r.matrix, r.started_at) for r in t.scalars(select(NightlyRun))}
    cells_of: dict[int, list[NightlyCell]] = {}
    for c in src.nightly_cells():
        cells_of.setdefault(c.run_id, []).append(c)
    with Session(src.engine) as s:
        runs = list(s.scalars(select(NightlyRun).order_by(NightlyRun.id)))
    for run in runs:
        if (run.matrix, run.started_at) in have:
            out.nightly_identical += 1
            continue
        copy = NightlyRun(matrix=run.matrix, started_at=run.started_at, finished_at=run.finished_at, status=run.status,
                          summary=run.summary)
        t.add(copy)
        t.flush()  # its new id
        for c in cells_of.get(run.id, []):
            t.add(NightlyCell(run_id=copy.id, model=c.model, variant=c.variant, cell_key=c.cell_key, reran=c.reran,
                              figures=c.figures))
        out.nightly_added += 1


def describe(report: MergeReport) -> list[str]:
    """The summary `evalq merge` prints."""
    lines = []
    for s in report.sources:
        lines.append(f"{s.source}: {s.added} cells added ({s.samples} sample sets), {s.identical} identical skipped, "
                     f"{len(s.conflicts)} conflicting, {s.running} still running left out; nightly runs: "
                     f"{s.nightly_added} added, {s.nightly_identical} already there")
        for c in s.conflicts:
            lines.append(f"  conflict {c.key[:12]} {c.name}: differs in {', '.join(c.fields)} (kept the one in {report.into})")
    return lines
