"""Every cell ends recorded exactly once under real faults, injected inside the
real worker by a backend registered only in tests (fault_backend.py)."""
from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.run.launch import LOG_TAIL_BYTES
from evalq.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_server import PG_PASSWORD  # noqa: E402

pytestmark = pytest.mark.integration

runner = CliRunner()
# a tiny cell takes 5 s on an AVX-512 Xeon and about 3x that on the slowest CI machine
TIMEOUT_S = 60

FAST = """\
suites: [tiny]
perf: {prompt_tokens: 8, new_tokens: 2, batch_sizes: [1], warmup: 0, repeats: 1, threads: 1}
eval: {batch_size: 4, limit: 3}
"""


@pytest.fixture(autouse=True)
def fault_env(fault_backends):
    pass


@pytest.fixture(scope="module")
def tiny(tiny_model_factory) -> Path:
    return tiny_model_factory()


def matrix(folder: Path, tiny: Path, variants: str, models: tuple[str, ...] = ("tiny",), timeout_s: int = TIMEOUT_S) -> Path:
    listed = "".join(f"  - name: {m}\n    path: {tiny}\n" for m in models)
    path = folder / "m.yaml"
    path.write_text(f"name: faults\nmodels:\n{listed}variants:\n{variants}{FAST}timeout_s: {timeout_s}\n")
    return path


def wait_dead(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_each_fault_is_recorded_and_the_matrix_goes_on(tmp_path, tiny):
    variants = ("  fault-raise: {}\n  fault-ok: {}\n  fault-sigkill: {}\n  fault-exit137: {}\n  fault-hang: {}\n"
                "  fault-flood: {megabytes: 300}\n  fault-oom: {megabytes: 256}\n")
    db = str(tmp_path / "e.db")
    res = runner.invoke(app, ["run", "--matrix", str(matrix(tmp_path, tiny, variants)), "--db", db])
    assert res.exit_code == 1, res.output  # --fail-on's default: error, oom, timeout, killed
    assert "5 cell(s) ended in error, killed, oom, timeout" in res.output
    rows = {r.variant: r for r in Store(db).cells()}
    print("\nfault → status recorded → time to recover (cell wall time)")
    for variant, r in rows.items():
        print(f"  {variant:14} → {r.status:8} → {r.wall_seconds:5.1f} s   {r.error or ''}")
    assert {v: r.status for v, r in rows.items()} == {
        "fault-raise": "error", "fault-ok": "ok", "fault-sigkill": "killed", "fault-exit137": "killed",
        "fault-hang": "timeout", "fault-flood": "ok", "fault-oom": "oom"}
    assert rows["fault-raise"].error == "RuntimeError: injected fault in a forward pass"
    assert rows["fault-hang"].wall_seconds < TIMEOUT_S + 10
    assert wait_dead(int((tmp_path / "hang-child.pid").read_text())), "the hung worker's child survived"
    flood = rows["fault-flood"]
    assert len(flood.log_tail.encode()) <= LOG_TAIL_BYTES and "END OF FLOOD" in flood.log_tail
    oom = rows["fault-oom"].result
    assert "allocate" in oom["error"] and oom["memory_at_failure"]["rss_bytes"] > 0
    assert all(r.attempts == 1 for r in rows.values())


def test_fail_on_none_exits_0_and_fail_on_decides_which_ends_fail(tmp_path, tiny):
    path = str(matrix(tmp_path, tiny, "  fault-raise: {}\n"))
    res = runner.invoke(app, ["run", "--matrix", path, "--db", str(tmp_path / "a.db"), "--fail-on", "none"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", "--matrix", path, "--db", str(tmp_path / "b.db"), "--fail-on", "oom,unsupported"])
    assert res.exit_code == 0, res.output  # it ended in error, not one of these
    res = runner.invoke(app, ["run", "--matrix", path, "--db", str(tmp_path / "b.db")])
    assert res.exit_code == 0, res.output  # stored failed, not re-run (no --rerun-failed): this run failed nothing


def cell_states(db) -> dict[str, str]:
    """Status by model/variant, or {} while the run has not yet created its tables."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("SELECT model || '/' || variant, status FROM cells").fetchall())
    except sqlite3.OperationalError:  # the file exists before its schema does
        return {}


def test_orchestrator_killed_mid_matrix_resumes_without_redoing_ok_cells(tmp_path, tiny):
    # a generous timeout: every cell must end ok, and a cell here is a worker start, 8 s asleep, then
    # lm-eval's task index, which took close to 30 s in all on a slow 2-core CPU
    path = matrix(tmp_path, tiny, "  fault-ok: {}\n  fault-slow: {seconds: 8}\n", models=("tiny-a", "tiny-b"), timeout_s=90)
    db = tmp_path / "e.db"
    orchestrator = subprocess.Popen([sys.executable, "-m", "evalq.cli", "run", "--matrix", str(path), "--db", str(db)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the slow cell of tiny-a is running
        if cell_states(db).get("tiny-a/fault-slow") == "running":
            break
        time.sleep(0.2)
    else:
        orchestrator.kill()
        pytest.fail("the slow cell never started")
    workers = psutil.Process(orchestrator.pid).children()
    orchestrator.send_signal(signal.SIGKILL)
    orchestrator.wait()
    assert workers and all(wait_dead(w.pid) for w in workers), "a worker outlived its orchestrator"

    res = runner.invoke(app, ["run", "--matrix", str(path), "--db", str(db)])
    assert res.exit_code == 0, res.output
    rows = {f"{r.model}/{r.variant}": r for r in Store(str(db)).cells()}
    assert {k: r.status for k, r in rows.items()} == dict.fromkeys(
        ["tiny-a/fault-ok", "tiny-a/fault-slow", "tiny-b/fault-ok", "tiny-b/fault-slow"], "ok")
    assert rows["tiny-a/fault-ok"].attempts == 1  # done once, never again
    assert rows["tiny-a/fault-slow"].attempts == 2  # left running by the killed run, run again
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_runs_on_one_database_share_the_work(tmp_path, tiny):
    path = matrix(tmp_path, tiny, "  fault-ok: {}\n  fault-slow: {seconds: 3}\n", models=("tiny-a", "tiny-b"))
    db = tmp_path / "e.db"
    cmd = [sys.executable, "-m", "evalq.cli", "run", "--matrix", str(path), "--db", str(db)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not any("database is locked" in o for o in outputs), outputs
    assert any("taken by another evalq run" in o for o in outputs), outputs  # the split is reported
    rows = Store(str(db)).cells()
    assert len(rows) == 4 and all(r.status == "ok" and r.attempts == 1 for r in rows), [(r.model, r.variant, r.status, r.attempts, r.error) for r in rows]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_runs_on_one_postgresql_share_a_matrix_and_one_killed_mid_cell_is_taken_over(tmp_path, tiny, pg_url):
    """Two `evalq run`s (two machines' worth) on one PostgreSQL URL: every cell runs to its
    end exactly once; the run SIGKILLed mid-cell leaves that cell to the other, nothing lost."""
    path = matrix(tmp_path, tiny, "  fault-ok: {}\n  fault-slow: {seconds: 8}\n", models=("tiny-a", "tiny-b"), timeout_s=90)
    cmd = [sys.executable, "-m", "evalq.cli", "run", "--matrix", str(path), "--db", pg_url]
    victim = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the victim is inside a cell
        held = [r for r in Store(pg_url).cells() if r.status == "running" and r.owner.endswith(f":{victim.pid}")]
        if held:
            break
        time.sleep(0.2)
    else:
        victim.kill()
        pytest.fail("the first run never started a cell")
    survivor = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    output = survivor.communicate(timeout=300)[0]
    assert survivor.returncode == 0, output
    assert PG_PASSWORD not in output

    rows = {f"{r.model}/{r.variant}": r for r in Store(pg_url).cells()}
    print("\n" + "\n".join(f"{k:18} {r.status:7} attempts={r.attempts} owner={r.owner}" for k, r in sorted(rows.items())))
    assert {k: r.status for k, r in rows.items()} == dict.fromkeys(
        ["tiny-a/fault-ok", "tiny-a/fault-slow", "tiny-b/fault-ok", "tiny-b/fault-slow"], "ok")
    killed = f"{held[0].model}/{held[0].variant}"
    assert rows[killed].attempts == 2 and rows[killed].owner.endswith(f":{survivor.pid}")  # taken over
    assert all(r.attempts == 1 for k, r in rows.items() if k != killed)  # every other cell ran once
