"""Runs the cells of a matrix through an executor and records every end.

Only this process writes the database: executors run cells (each in its own
child process, see run.launch) and hand back how each ended.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

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
              echo: bool = False, console: Any = None, child_module: str = "evalq.run.child",
              wont_fit: dict[str, CellOutcome] | None = None, executor: Any = None) -> RunSummary:
    """Run each cell not stored ok, through `executor` (default: one at a time
    here). `wont_fit`: cell key → the planner's outcome for cells predicted not
    to fit; they are stored `skipped` with the predicted need instead of
    running into an OOM."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    executor = executor or LocalExecutor(echo, child_module)
    summary = RunSummary(total=len(cells))
    wanted = lambda status: should_run(status, force, rerun_failed)  # noqa: E731
    todo = [c for c in cells if wanted(store.status(c.key))]
    summary.skipped = len(cells) - len(todo)
    if summary.skipped:
        console.log(f"{summary.skipped} of {len(cells)} cells already stored (skipped; --force or --rerun-failed to run again)")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    pending = list(enumerate(todo, 1))
    watched: list[tuple[int, Cell]] = []  # running under another live `evalq run` on this database
    try:
        with Progress(*columns, console=console, transient=False) as progress, heartbeat(store):
            run = _Run(cells, store, executor, summary, console, progress, progress.add_task("cells", total=len(todo)),
                       len(todo), wanted, wont_fit or {})
            while pending or executor.in_flight() or watched:
                if not pending and not executor.in_flight():
                    time.sleep(TAKEOVER_POLL_S)  # only others' cells left: finished there, or taken over here
                    pending, watched = watched, []
                while pending and executor.in_flight() < executor.slots:
                    i, cell = pending.pop(0)
                    if run.start(i, cell) == "watch":
                        watched.append((i, cell))  # its run may die: then this one takes it over
                if executor.in_flight():
                    run.record_ended()
    finally:
        executor.close()
    return summary


@dataclass
class _Run:
    """One `evalq run`'s cells going through the executor: claimed, started, recorded."""

    cells: list[Cell]
    store: Store
    executor: Any
    summary: RunSummary
    console: Any
    progress: Any
    bar: Any
    todo: int
    wanted: Callable[[Any], bool]
    wont_fit: dict[str, CellOutcome]
    claims: dict[str, Claim] = field(default_factory=dict)  # what this run holds: recorded only while it still holds it

    def start(self, i: int, cell: Cell) -> str:
        """Claim the cell and start it; "watch" when another live run holds it."""
        from rich.markup import escape

        label = escape(f"[{i}/{self.todo}] {cell.name}")
        # another `evalq run` on this database may have taken or finished it meanwhile
        claim = self.store.claim(cell, self.wanted)
        if not claim:
            if self.store.status(cell.key) == Status.running:
                return "watch"
            self.summary.elsewhere += 1
            self.progress.advance(self.bar)
            return "elsewhere"
        self.summary.keys_ran.append(cell.key)
        if cell.key in self.wont_fit:
            outcome = self.wont_fit[cell.key]
            self.store.record(cell, outcome, claim=claim)
            self.summary.outcomes[cell.key] = outcome
            self.summary.count(outcome)
            self.console.log(escape(f"{cell.name}: skipped: {outcome.error}"))
            self.progress.advance(self.bar)
            return "skipped"
        self.claims[cell.key] = claim
        self.progress.update(self.bar, description=f"{label} · starting")
        cell = with_baseline_scores(cell, self.cells, self.store)
        self.executor.start(cell, lambda p: self.progress.update(self.bar, description=f"{label} · {escape(p)}"))
        return "started"

    def record_ended(self) -> None:
        from rich.markup import escape

        for cell, end in self.executor.wait():
            self.progress.advance(self.bar)
            try:
                self.store.record(cell, end.outcome, end.samples, end.log_tail, end.wall_seconds, self.claims.pop(cell.key))
            except Superseded as exc:
                self.summary.superseded.append(cell.key)
                self.console.log(escape(f"{cell.name}: {end.status} in {end.wall_seconds:.0f} s, superseded: {exc}"))
                continue
            self.summary.outcomes[cell.key] = end.outcome
            self.summary.count(end.outcome)
            note = f": {end.outcome.error}" if not end.outcome.ok else ""
            self.console.log(escape(f"{cell.name}: {end.status} in {end.wall_seconds:.0f} s{note}"))


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
