"""The Python API under the CLI, the CLI's own conveniences (--dry-run, --fail-on,
--version, python -m evalq), the typed outcome and the threads of each phase."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq import __version__, api
from evalq.cli import app
from evalq.outcome import CellOutcome, Status
from evalq.orchestrator import RunSummary
from evalq.store import Store
from evalq.threads import available

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "showcase.yaml"
runner = CliRunner()


def test_prepare_expands_and_plans_what_will_not_fit():
    prepared = api.prepare(DEMO, gpu_memory="500MB")
    assert len(prepared.cells) == 14 and set(prepared.wont_fit) == {c.key for c in prepared.cells}
    skipped = prepared.wont_fit[prepared.cells[0].key]
    assert skipped.status is Status.skipped and "exceeds 0.50 GB" in skipped.error and skipped.plan.predicted_peak_bytes > 5e8
    assert api.prepare(DEMO).wont_fit == {}  # on the CPU without --gpu-memory nothing is planned away


def test_configs_are_read_only_when_a_cell_is_planned_and_once_per_model(monkeypatch):
    import evalq.model_sources

    read = []
    real = evalq.model_sources.read_config
    monkeypatch.setattr(evalq.model_sources, "read_config", lambda spec: read.append(spec.display_name) or real(spec))
    prepared = api.prepare(DEMO)  # the CPU, no --gpu-memory: nothing to plan
    assert read == []
    plans = [prepared.plan(c) for c in prepared.cells]
    assert all(p and p.predicted_weights_bytes > 0 for p in plans)
    assert read == ["SmolLM2-135M-Instruct", "Gemma-3-270M"]  # each model's once


def test_dry_run_says_why_each_cell_would_run_and_writes_nothing(tmp_path):
    db = tmp_path / "e.db"
    res = runner.invoke(app, ["run", "--matrix", str(DEMO), "--db", str(db), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert res.output.count("  new") == 14 and "14 of 14 cells would run" in res.output
    assert not db.exists()

    prepared = api.prepare(DEMO)
    a, b, c = prepared.cells[:3]
    store = Store(str(db))
    store.record(a, {"status": "ok", "error": None})
    store.record(b, {"status": "oom", "error": "out of memory"})
    older = c.model_copy(update={"revision": "sha256:an-older-revision"})
    store.record(older, {"status": "ok"})
    plan = {p.cell.key: p for p in api.dry_run(prepared, str(db))}
    assert (plan[a.key].would_run, plan[a.key].reason) == (False, "stored ok")
    assert (plan[b.key].would_run, plan[b.key].reason) == (False, "oom last time (--rerun-failed to run it again)")
    assert plan[c.key].would_run and plan[c.key].reason == f"changed key: revision: sha256:an-older-revision → {c.revision}"
    assert api.dry_run(prepared, str(db), rerun_failed=True)[1].would_run
    assert {Store(str(db)).status(k) for k in (a.key, b.key, older.key)} == {"ok", "oom"}  # nothing written by the dry run


def test_failures_pick_the_fail_on_statuses():
    summary = RunSummary(outcomes={"a": CellOutcome(status=Status.ok), "b": CellOutcome(status=Status.timeout),
                                   "c": CellOutcome(status=Status.unsupported)})
    assert set(api.failures(summary)) == {"b"}
    assert set(api.failures(summary, ("unsupported",))) == {"c"}
    assert api.failures(summary, ()) == {}


def test_fail_on_rejects_an_unknown_status(tmp_path):
    res = runner.invoke(app, ["run", "--matrix", str(DEMO), "--db", str(tmp_path / "e.db"), "--fail-on", "error,oops"])
    assert res.exit_code == 2 and "oops" in res.output


def test_version_and_python_dash_m():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"evalq {__version__}"
    proc = subprocess.run([sys.executable, "-m", "evalq", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"evalq {__version__}"
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_results_and_frame_from_a_database(tmp_path):
    pd = pytest.importorskip("pandas")
    prepared = api.prepare(DEMO)
    db = str(tmp_path / "e.db")
    store = Store(db)
    for cell in prepared.cells[:2]:
        store.record(cell, {"status": "ok", "metrics": {"arc_easy": {"acc_norm": 0.5, "acc_norm_stderr": 0.05}}, "weights_bytes": 10})
    records = api.results(db)
    assert [r.variant for r in records] == [c.variant for c in prepared.cells[:2]]
    frame = api.results_frame(db)
    assert isinstance(frame, pd.DataFrame) and list(frame["weights_bytes"]) == [10, 10]
    with pytest.raises(Exception, match="does not exist"):
        api.results(str(tmp_path / "missing.db"))


def test_an_outcome_reads_back_as_it_was_stored(tmp_path):
    stored = {"status": "ok", "error": None, "speed": {"ttft_ms": 5.0, "by_batch": {"1": {"x": 1}}, "timer": "perf_counter"},
              "quality": {"kld_mean": 0.01, "kld": {"p99": 0.1}}, "details": {"bits": 4}, "a_newer_key": [1, 2]}
    outcome = CellOutcome.from_stored(stored)
    assert outcome.speed.ttft_ms == 5.0 and outcome.quality.kld_mean == 0.01 and outcome.details["bits"] == 4
    assert outcome.stored() == stored  # the same JSON: no key added, none lost
    cell = api.prepare(DEMO).cells[0]
    store = Store(str(tmp_path / "e.db"))
    store.record(cell, outcome)
    [row] = store.cells()
    assert row.result == stored and row.ttft_ms == 5.0 and row.outcome.quality.model_extra == {"kld": {"p99": 0.1}}
    assert CellOutcome.from_stored(None, "running").status is Status.running


def test_each_phase_has_one_resolved_thread_count():
    cell = api.prepare(DEMO).cells[0]  # perf.threads 1, eval.threads null (every core)
    every = available()
    assert cell.thread_plan() == {"prepare": every, "accuracy": every, "speed": 1, "quality": every}
    with pytest.raises(ValueError, match="unknown phase"):
        cell.threads("load")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_every_core_means_the_cores_this_process_may_use():
    """taskset, a cgroup cpuset or a Slurm allocation: "every core" is the process's affinity, not the host's."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from evalq.threads import resolve; from evalq.env import environment; "
            "print(resolve(None), environment('cpu')['cpus_available'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1"]


def test_threads_using_sets_and_restores_every_library():
    import os

    import torch

    from evalq import threads

    class Model:  # a model that owns its threads, as llama.cpp's does
        threads = 3

        def set_threads(self, n):
            self.threads = n

    model, before = Model(), torch.get_num_threads()
    with threads.using(1, model) as n:
        assert n == 1 and torch.get_num_threads() == 1 and model.threads == 1
        assert "EVALQ_THREADS" not in os.environ  # threads travel in Resources, not the environment
    assert torch.get_num_threads() == before and model.threads == 3


def test_until_decided_fills_in_the_defaults_and_rekeys_the_cells():
    plain, decided = api.prepare(DEMO), api.prepare(DEMO, until_decided=True)
    settings = decided.cells[0].eval.until_decided
    assert plain.cells[0].eval.until_decided is None and settings.max_documents == 500 and settings.gates == [0.99]
    assert {c.key for c in plain.cells}.isdisjoint(c.key for c in decided.cells)  # other documents: other cells
    res = runner.invoke(app, ["run", "--matrix", str(DEMO), "--until-decided", "--dry-run", "--db", "x.db"])
    assert res.exit_code == 0 and "14 cells would run" in " ".join(res.output.split()), res.output
