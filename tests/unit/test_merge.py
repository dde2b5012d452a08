"""`evalq merge`: databases from several machines folded into one, on SQLite and PostgreSQL."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.cell import expand
from evalq.cli import app
from evalq.matrix import read_matrix
from evalq.store import Store

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cells(hardware: str, models: slice) -> list:
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    every = expand(matrix, suites, lambda spec: "r", device="cpu", hardware=hardware)
    return [c for c in every if c.variant in ("fp16", "int8")][models]


def outcome(acc: float) -> dict:
    return {"status": "ok", "weights_bytes": 26_031_728_640, "metrics": {"t": {"acc,none": acc, "acc_stderr,none": 0.05}},
            "speed": {"ttft_ms": 10.0, "decode_tokens_per_s": 50.0}}


def machine_db(path: Path, hardware: str, models: slice, acc: float, nightly: bool = False) -> str:
    """What one machine's `evalq run` (and nightly) leaves: cells, their samples, a night of history."""
    store = Store(str(path))
    for c in cells(hardware, models):
        store.record(c, outcome(acc), {"t": [{"doc_id": 0, "acc": 1.0}, {"doc_id": 1, "acc": 0.0}]}, "log", 2.0)
    if nightly:
        run = store.start_nightly("demo")
        store.finish_nightly(run, "ok", {"cells": 2}, [(c.model.display_name, c.variant, c.key, True, {"acc": acc})
                                                      for c in cells(hardware, models)])
    return str(path)


@pytest.fixture(params=["sqlite", "postgresql"])
def into(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "merged.db")  # not there yet: created
    return request.getfixturevalue("pg_url")


def test_two_machines_fold_into_one_and_merging_again_changes_nothing(tmp_path, into):
    a = machine_db(tmp_path / "a.db", "AMD EPYC · avx2", slice(0, 2), 0.6, nightly=True)  # SmolLM2 fp16, int8
    b = machine_db(tmp_path / "b.db", "Intel Xeon · avx2 avx512f", slice(2, 4), 0.7)  # Gemma fp16, int8
    first = runner.invoke(app, ["merge", a, b, "--into", into])
    assert first.exit_code == 0, first.output
    assert "a.db: 2 cells added (2 sample sets), 0 identical skipped, 0 conflicting" in first.output
    assert "b.db: 2 cells added (2 sample sets)" in first.output and "nightly runs: 1 added" in first.output
    merged = Store(into)
    rows = merged.cells()
    assert sorted((r.model, r.variant, r.cell["hardware"]) for r in rows) == [
        ("Gemma-3-270M", "fp16", "Intel Xeon · avx2 avx512f"), ("Gemma-3-270M", "int8", "Intel Xeon · avx2 avx512f"),
        ("SmolLM2-135M-Instruct", "fp16", "AMD EPYC · avx2"), ("SmolLM2-135M-Instruct", "int8", "AMD EPYC · avx2")]
    assert {r.weights_bytes for r in rows} == {26_031_728_640}
    assert all(merged.samples(r.key, "t") == [{"doc_id": 0, "acc": 1.0}, {"doc_id": 1, "acc": 0.0}] for r in rows)
    assert [(c.variant, c.figures) for c in merged.nightly_cells()] == [("fp16", {"acc": 0.6}), ("int8", {"acc": 0.6})]

    again = runner.invoke(app, ["merge", a, b, "--into", into])
    assert again.exit_code == 0, again.output
    assert "0 cells added (0 sample sets), 2 identical skipped, 0 conflicting" in again.output
    assert "nightly runs: 0 added, 1 already there" in again.output
    assert len(Store(into).cells()) == 4 and len(Store(into).nightly_runs()) == 1

    built = runner.invoke(app, ["leaderboard", "build", "--db", into, "--out", str(tmp_path / "site")])
    assert built.exit_code == 0, built.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count('<h2 id="g-') == 2  # one per machine: never ranked together


def test_the_same_key_with_other_figures_is_a_conflict_never_overwritten(tmp_path, into):
    a = machine_db(tmp_path / "a.db", "AMD EPYC · avx2", slice(0, 2), 0.6)
    again = machine_db(tmp_path / "again.db", "AMD EPYC · avx2", slice(0, 2), 0.65)  # same cells, other numbers
    assert runner.invoke(app, ["merge", a, "--into", into]).exit_code == 0
    result = runner.invoke(app, ["merge", again, "--into", into])
    assert result.exit_code == 1, result.output
    assert "0 cells added (0 sample sets), 0 identical skipped, 2 conflicting" in result.output
    assert result.output.count("differs in metrics, result") == 2
    assert {r.metrics["t"]["acc,none"] for r in Store(into).cells()} == {0.6}  # the first kept


def test_a_source_that_does_not_exist_is_bad_input(tmp_path):
    result = runner.invoke(app, ["merge", str(tmp_path / "nope.db"), "--into", str(tmp_path / "m.db")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "m.db").exists()
    db = machine_db(tmp_path / "a.db", "x", slice(0, 1), 0.5)
    result = runner.invoke(app, ["merge", db, "--into", db])
    assert result.exit_code == 2 and "is the database merged into" in result.output
