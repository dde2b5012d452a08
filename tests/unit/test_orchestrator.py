"""Every way a worker can end is classified and recorded, and the matrix goes on."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalq.cell import Cell, expand
from evalq.matrix import read_matrix
from evalq.orchestrator import run_cells
from evalq.run.launch import LOG_TAIL_BYTES, run_child
from evalq.store import Store

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def fault_worker_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("FAULT_PID_FILE", str(tmp_path / "grandchild.pid"))


def fault_cell(fault: str, timeout_s: int | None = 60) -> Cell:
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    base = expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[0]
    return base.model_copy(update={"variant": fault, "timeout_s": timeout_s})


def test_ok_result_and_phases_are_reported():
    phases = []
    end = run_child(fault_cell("ok"), on_phase=phases.append, child_module="fault_worker")
    assert end.status == "ok" and end.outcome.metrics["t"]["acc"] == 1.0
    assert phases == ["load"]


def test_raise_is_an_error_with_the_last_traceback_line():
    end = run_child(fault_cell("raise"), child_module="fault_worker")
    assert end.status == "error"
    assert "RuntimeError: boom in measurement" in end.outcome.error


def test_sigkill_is_killed():
    assert run_child(fault_cell("sigkill"), child_module="fault_worker").status == "killed"


def test_hang_is_a_timeout_and_the_whole_group_dies(tmp_path):
    started = time.monotonic()
    end = run_child(fault_cell("hang", timeout_s=3), child_module="fault_worker")
    assert end.status == "timeout"
    assert time.monotonic() - started < 3 + 10
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert wait_dead(grandchild), "the worker's own child outlived the timeout"


def wait_dead(pid: int, within_s: float = 5.0) -> bool:
    """Gone, or a zombie waiting for its (re)parent to reap it: either way not running."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_flood_does_not_deadlock_and_the_tail_is_bounded(monkeypatch):
    monkeypatch.setenv("FAULT_FLOOD_MB", "64")
    end = run_child(fault_cell("flood"), child_module="fault_worker")
    assert end.status == "ok"
    assert len(end.log_tail.encode()) <= LOG_TAIL_BYTES
    assert end.log_tail.rstrip().endswith("LAST LINE")


def test_matrix_goes_on_and_every_end_is_recorded(tmp_path):
    store = Store(str(tmp_path / "e.db"))
    cells = [fault_cell(f) for f in ("raise", "ok", "sigkill")]
    summary = run_cells(cells, store, child_module="fault_worker")
    assert summary.ran == {"error": 1, "ok": 1, "killed": 1}
    assert sorted(r.status for r in store.cells()) == ["error", "killed", "ok"]
    # a second run skips what is ok and, by default, what failed
    again = run_cells(cells, store, child_module="fault_worker")
    assert again.skipped == 3 and again.ran == {}
    retried = run_cells(cells, store, rerun_failed=True, child_module="fault_worker")
    assert retried.skipped == 1 and sum(retried.ran.values()) == 2


def test_a_cell_left_running_is_run_again(tmp_path):
    store = Store(str(tmp_path / "e.db"))
    cell = fault_cell("ok")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    # as if an orchestrator, now gone, had died mid-cell
    assert store.claim(cell, lambda status: True, owner=f"{socket.gethostname()}:{dead}")
    assert store.status(cell.key) == "running"
    summary = run_cells([cell], store, child_module="fault_worker")
    assert summary.ran == {"ok": 1}
    assert store.cells()[0].attempts == 2


def test_a_run_marks_its_running_cells_alive_while_it_runs(tmp_path, monkeypatch):
    """The heartbeat another machine's run reads (store.db.owner_alive) is kept fresh by the run itself."""
    from datetime import datetime, timedelta

    from sqlalchemy import update

    from evalq import orchestrator
    from evalq.store.tables import CellRow

    monkeypatch.setattr(orchestrator, "HEARTBEAT_S", 0.05)
    matrix, suites = read_matrix(Path(__file__).resolve().parents[2] / "examples" / "showcase.yaml")
    cell = expand(matrix, suites, lambda spec: "r", device="cpu")[0]
    store = Store(str(tmp_path / "e.db"))
    assert store.claim(cell, lambda status: True)
    old = datetime.utcnow() - timedelta(hours=1)
    with store.engine.begin() as conn:
        conn.execute(update(CellRow).values(heartbeat_at=old))
    with orchestrator.heartbeat(store):
        deadline = time.monotonic() + 10
        while store.cells()[0].heartbeat_at == old and time.monotonic() < deadline:
            time.sleep(0.05)
    assert store.cells()[0].heartbeat_at > old + timedelta(minutes=59)


FROZEN_RUNNER = """
import json, socket, sys
socket.gethostname = lambda: "node-a"  # another machine, as far as the database can tell: only its heartbeat speaks
from pathlib import Path
from evalq.cell import Cell
from evalq.orchestrator import run_cells
from evalq.store import Store
summary = run_cells([Cell.model_validate_json(Path(sys.argv[2]).read_text())], Store(sys.argv[1]), child_module="fault_worker")
print(json.dumps({"superseded": summary.superseded, "recorded": list(summary.outcomes)}))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_runner_frozen_past_the_stale_limit_loses_its_cell_and_records_nothing(tmp_path, monkeypatch, request, backend):
    """SIGSTOP a runner mid-cell past the stale limit; another runner takes the cell over and records it;
    SIGCONT the first: its result is kept aside and reported, never written over the other's."""
    import json
    import signal

    from evalq.store import db as store_db

    db = str(tmp_path / "e.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(db)
    cell = fault_cell("slow")
    (tmp_path / "cell.json").write_text(cell.model_dump_json())
    env = {**os.environ, "FAULT_SLEEP_S": "6", "FAULT_ACC": "0.1", "EVALQ_HEARTBEAT_S": "0.2"}
    frozen = subprocess.Popen([sys.executable, "-c", FROZEN_RUNNER, db, str(tmp_path / "cell.json")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while store.status(cell.key) != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.cells()[0].owner.startswith("node-a:")
        os.killpg(frozen.pid, signal.SIGSTOP)  # the runner and its worker: a paused VM
        monkeypatch.setattr(store_db, "STALE_AFTER_S", 1.0)
        time.sleep(1.5)
        monkeypatch.setenv("FAULT_SLEEP_S", "0")
        monkeypatch.setenv("FAULT_ACC", "0.9")
        live = run_cells([cell], store, child_module="fault_worker")
        assert list(live.outcomes) == [cell.key] and not live.superseded
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    out, err = frozen.communicate(timeout=60)
    assert frozen.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"superseded": [cell.key], "recorded": []}
    assert "superseded: taken over by" in " ".join(err.split())
    rows = store.cells()
    assert [(r.status, r.metrics, r.attempts, r.owner.startswith("node-a:")) for r in rows] == [("ok", {"t": {"acc": 0.9}}, 2, False)]
    kept = store.superseded()
    assert [(k.cell_key, k.attempt, k.taken_attempt, k.result["metrics"]) for k in kept] == [(cell.key, 1, 2, {"t": {"acc": 0.1}})]
    assert kept[0].owner.startswith("node-a:")


def test_a_quantized_cell_carries_the_fp16_scores_its_gates_and_questions_pair_with(tmp_path):
    """eval.until_decided.compare: Big's quantized cells get Big's fp16 scores (the gates)
    and Small's (the equal-cost question), read from the store; Small's get no rival."""
    from evalq.orchestrator import with_baseline_scores

    path = tmp_path / "m.yaml"
    path.write_text("name: q\nmodels:\n  - {name: Small, hub: org/small}\n  - {name: Big, hub: org/big}\n"
                    "variants: {fp16: {}, int8: {}}\nsuites: [tiny]\n"
                    "eval: {until_decided: {max_documents: 10, compare: [{model: Big, against: Small, margin: 0.05}]}}\n")
    matrix, suites = read_matrix(path)
    cells = expand(matrix, suites, lambda spec: "0" * 40, device="cpu")
    by = {(c.model.display_name, c.variant): c for c in cells}
    store = Store(str(tmp_path / "e.db"))
    task = suites[0].tasks[0]
    for name, score in (("Small", 0.0), ("Big", 1.0)):
        samples = {task.task: [{"doc_id": d, "doc_hash": f"h{d}", task.metric: score} for d in range(3)]}
        store.record(by[(name, "fp16")], {"status": "ok"}, samples)
    big = with_baseline_scores(by[("Big", "int8")], cells, store)
    assert big.baseline_scores[task.task] == {"0": 1.0, "1": 1.0, "2": 1.0}
    assert big.rival_scores == {"Small": {t.task: ({"0": 0.0, "1": 0.0, "2": 0.0} if t.task == task.task else {}) for t in suites[0].tasks}}
    assert big.key == by[("Big", "int8")].key  # the scores handed over are not part of the key
    small = with_baseline_scores(by[("Small", "int8")], cells, store)
    assert small.rival_scores is None and small.baseline_scores[task.task] == {"0": 0.0, "1": 0.0, "2": 0.0}
