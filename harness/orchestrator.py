"""Runs the cells of a matrix, each in its own worker process, and records every end.

The worker is a new process group with a wall-clock limit; on overrun the whole
group is killed. Its output is drained continuously (a worker that floods
stdout never blocks) and only the last LOG_TAIL_BYTES are kept. Only this
process writes the database.
"""
from __future__ import annotations

import collections
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evalq.cell import Cell
from evalq.store import Store
from evalq.worker import PHASE_PREFIX

LOG_TAIL_BYTES = 64 * 1024
KILL_GRACE_S = 5.0


@dataclass
class WorkerEnd:
    status: str
    outcome: dict[str, Any]
    samples: dict[str, list] | None
    log_tail: str
    wall_seconds: float


class _OutputDrain(threading.Thread):
    """Reads a worker's combined stdout/stderr to the end, keeping a bounded tail
    and reporting phase announcements."""

    def __init__(self, stream: Any, on_phase: Callable[[str], None], echo: bool):
        super().__init__(daemon=True)
        self.stream = stream
        self.on_phase = on_phase
        self.echo = echo
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = 0
        self._prefix = PHASE_PREFIX.encode()

    def run(self) -> None:
        for line in iter(lambda: self.stream.readline(1 << 16), b""):
            if line.startswith(self._prefix):
                self.on_phase(line[len(self._prefix):].decode(errors="replace").strip())
                continue
            if self.echo:
                sys.stderr.write(line.decode(errors="replace"))
            self.tail.append(line)
            self.tail_size += len(line)
            while self.tail_size > LOG_TAIL_BYTES and len(self.tail) > 1:
                self.tail_size -= len(self.tail.popleft())
        self.stream.close()

    def text(self) -> str:
        data = b"".join(self.tail)[-LOG_TAIL_BYTES:]
        return data.decode(errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_worker(cell: Cell, on_phase: Callable[[str], None] = lambda p: None, echo: bool = False,
               worker_module: str = "evalq.worker") -> WorkerEnd:
    """Run one cell in a fresh process group and classify how it ended."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evalq-cell-") as tmp:
        out_dir = Path(tmp)
        (out_dir / "cell.json").write_text(cell.model_dump_json())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "EVALQ_PARENT_PID": str(os.getpid())}
        proc = subprocess.Popen(
            [sys.executable, "-m", worker_module, str(out_dir / "cell.json"), str(out_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills its children too
            env=env,
        )
        drain = _OutputDrain(proc.stdout, on_phase, echo)
        drain.start()
        timed_out = False
        try:
            proc.wait(timeout=cell.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        except BaseException:
            _kill_group(proc)  # Ctrl-C or an error here must not leave a worker behind
            proc.wait()
            raise
        finally:
            # a grandchild holding the pipe open would keep the drain alive: bound the wait
            drain.join(timeout=KILL_GRACE_S)
        wall = time.monotonic() - started
        tail = drain.text()
        result_file = out_dir / "result.json"
        if timed_out:
            outcome = {"status": "timeout", "error": f"exceeded the cell timeout of {cell.timeout_s} s; process group killed"}
        elif result_file.exists():
            outcome = json.loads(result_file.read_text())
        elif proc.returncode in (-signal.SIGKILL, 137):
            outcome = {"status": "killed", "error": "worker was killed (SIGKILL): out of memory or killed from outside"}
        else:
            last = next((ln for ln in reversed(tail.strip().splitlines()) if ln.strip()), "")
            outcome = {"status": "error", "error": f"worker exited with code {proc.returncode}: {last}"[:2000]}
        samples = None
        samples_file = out_dir / "samples.json.gz"
        if outcome.get("status") == "ok" and samples_file.exists():
            with gzip.open(samples_file, "rt", encoding="utf-8") as fh:
                samples = json.load(fh)
        return WorkerEnd(outcome["status"], outcome, samples, tail, wall)


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0  # already stored
    elsewhere: int = 0  # taken by another orchestrator on the same database
    ran: dict[str, int] = field(default_factory=dict)
    keys_ran: list[str] = field(default_factory=list)  # cells run (or stored skipped) by this run


def should_run(status: str | None, force: bool, rerun_failed: bool) -> bool:
    if force or status is None or status == "running":  # running: a previous orchestrator died mid-cell
        return True
    if status == "ok":
        return False
    return rerun_failed


def run_cells(cells: list[Cell], store: Store, force: bool = False, rerun_failed: bool = False,
              echo: bool = False, console: Any = None, worker_module: str = "evalq.worker",
              wont_fit: dict[str, dict[str, Any]] | None = None, executor: Any = None) -> RunSummary:
    """Run each cell not stored ok, through `executor` (default: one at a time
    here). `wont_fit`: cell key → the planner's outcome for cells predicted not
    to fit; they are stored `skipped` with the predicted need instead of
    running into an OOM."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evalq.executors import LocalExecutor

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
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("cells", total=len(todo))
            while pending or executor.in_flight():
                while pending and executor.in_flight() < executor.slots:
                    i, cell = pending.pop(0)
                    label = escape(f"[{i}/{len(todo)}] {cell.name}")
                    # another `evalq run` on this database may have taken or finished it meanwhile
                    if not store.claim(cell, wanted):
                        summary.elsewhere += 1
                        progress.advance(bar)
                        continue
                    summary.keys_ran.append(cell.key)
                    if wont_fit and cell.key in wont_fit:
                        store.record(cell, wont_fit[cell.key], None, "", 0.0)
                        summary.ran["skipped"] = summary.ran.get("skipped", 0) + 1
                        console.log(escape(f"{cell.name}: skipped: {wont_fit[cell.key]['error']}"))
                        progress.advance(bar)
                        continue
                    progress.update(bar, description=f"{label} · starting")
                    executor.start(cell, lambda p, label=label: progress.update(bar, description=f"{label} · {escape(p)}"))
                if not executor.in_flight():
                    continue
                for cell, end in executor.wait():
                    store.record(cell, end.outcome, end.samples, end.log_tail, end.wall_seconds)
                    summary.ran[end.status] = summary.ran.get(end.status, 0) + 1
                    note = f": {end.outcome.get('error')}" if end.status != "ok" else ""
                    console.log(escape(f"{cell.name}: {end.status} in {end.wall_seconds:.0f} s{note}"))
                    progress.advance(bar)
    finally:
        executor.close()
    return summary
