"""Runs one cell in its child process (evalq.run.child) and classifies how it ended.

The child is a new process group with a wall-clock limit; on overrun the whole
group is killed. Its output is drained continuously (a child that floods
stdout never blocks) and only the last LOG_TAIL_BYTES are kept. Every executor
runs cells through `run_child`, so every end is classified the same way.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evalq.cell import Cell
from evalq.lifeline import PHASE_PREFIX
from evalq.outcome import CellOutcome, Status
from evalq.resources import Resources

LOG_TAIL_BYTES = 64 * 1024
KILL_GRACE_S = 5.0


@dataclass
class ChildEnd:
    outcome: CellOutcome
    samples: dict[str, list] | None = None
    log_tail: str = ""
    wall_seconds: float = 0.0

    @property
    def status(self) -> Status:
        return self.outcome.status


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


def run_child(cell: Cell, on_phase: Callable[[str], None] = lambda p: None, echo: bool = False,
              child_module: str = "evalq.run.child", resources: Resources | None = None) -> ChildEnd:
    """Run one cell in a fresh process group and classify how it ended. `resources`: what an
    executor gave it (several GPUs); by default the cell's device and its threads by phase."""
    started = time.monotonic()
    resources = resources or cell.resources()
    with tempfile.TemporaryDirectory(prefix="evalq-cell-") as tmp:
        out_dir = Path(tmp)
        (out_dir / "cell.json").write_text(cell.model_dump_json())
        (out_dir / "resources.json").write_text(resources.to_json())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen(
            [sys.executable, "-m", child_module, str(out_dir / "cell.json"), str(out_dir), str(os.getpid())],
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
            outcome = CellOutcome(status=Status.timeout, error=f"exceeded the cell timeout of {cell.timeout_s} s; process group killed")
        elif result_file.exists():
            outcome = CellOutcome.from_stored(json.loads(result_file.read_text()))
        elif proc.returncode in (-signal.SIGKILL, 137):
            outcome = CellOutcome(status=Status.killed, error="worker was killed (SIGKILL): out of memory or killed from outside")
        else:
            last = next((ln for ln in reversed(tail.strip().splitlines()) if ln.strip()), "")
            outcome = CellOutcome(status=Status.error, error=f"worker exited with code {proc.returncode}: {last}"[:2000])
        samples = None
        samples_file = out_dir / "samples.json.gz"
        if outcome.ok and samples_file.exists():
            with gzip.open(samples_file, "rt", encoding="utf-8") as fh:
                samples = json.load(fh)
        return ChildEnd(outcome, samples, tail, wall)
