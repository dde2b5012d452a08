"""The CLI: clear errors with exit code 2 and no traceback; results in three formats."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.cell import expand
from evalq.cli import app
from evalq.matrix import read_matrix
from evalq.store import Store

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_validate_ok():
    res = runner.invoke(app, ["validate", str(ROOT / "examples" / "showcase.yaml")])
    assert res.exit_code == 0, res.output
    assert "2 models × 7 variants = 14 cells" in res.output


def test_validate_typo_exits_2_without_traceback(write):
    path = write("m.yaml", demo_text().replace("suites:", "suite:"))
    res = runner.invoke(app, ["validate", str(path)])
    assert res.exit_code == 2
    assert "did you mean 'suites'" in res.output and "Traceback" not in res.output


def test_debug_shows_the_exception(write):
    path = write("m.yaml", "name: x\n")
    res = runner.invoke(app, ["validate", str(path), "--debug"])
    assert res.exit_code != 0 and res.exception is not None


def test_run_with_database_in_missing_folder_exits_2(tmp_path):
    res = runner.invoke(app, ["run", "--matrix", str(ROOT / "examples" / "showcase.yaml"), "--db", str(tmp_path / "no" / "e.db")])
    assert res.exit_code == 2 and "does not exist" in res.output


def demo_text() -> str:
    """examples/showcase.yaml, to be written elsewhere (its texts are shipped with evalq: no relative path)."""
    return (ROOT / "examples" / "showcase.yaml").read_text()


def test_hub_suite_offline_is_refused_before_running(write, tmp_path):
    text = demo_text().replace("suites: [demo]", "suites: [quick]")
    res = runner.invoke(app, ["run", "--matrix", str(write("m.yaml", text)), "--db", str(tmp_path / "e.db")])
    assert res.exit_code == 2 and "needs hub access" in res.output
    assert Store(str(tmp_path / "e.db")).cells() == []  # nothing partial written


def test_results_of_missing_database_exits_2(tmp_path):
    res = runner.invoke(app, ["results", "--db", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and "does not exist" in res.output


def stored_db(tmp_path) -> str:
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    cells = expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")
    db = str(tmp_path / "e.db")
    store = Store(db)
    store.record(cells[0], {"status": "ok", "dtype": "bfloat16", "weights_bytes": 269_000_000, "peak_memory_bytes": 1_800_000_000,
                            "load_seconds": 1.2, "speed": {"ttft_ms": 50.0, "decode_tokens_per_s": 33.9},
                            # the demo suite declares acc_norm for ARC-Easy: acc must not be its headline
                            "metrics": {"arc_easy": {"acc": 0.612, "acc_stderr": 0.049, "acc_norm": 0.658, "acc_norm_stderr": 0.043},
                                        "piqa": {"acc": 0.64, "acc_stderr": 0.048, "acc_norm": 0.66, "acc_norm_stderr": 0.047}}},
                 None, "", 10.0)
    store.record(cells[3], {"status": "unsupported", "error": "gptqmodel is not installed"}, None, "", 1.0)
    return db


def test_results_json_has_the_documented_fields(tmp_path):
    res = runner.invoke(app, ["results", "--db", stored_db(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["variant"]: r for r in json.loads(res.stdout)}
    for field in ("model", "variant", "status", "dtype", "weights_bytes", "peak_memory_bytes", "load_seconds",
                  "ttft_ms", "decode_tokens_per_s", "metrics", "error"):
        assert field in rows["fp16"]
    assert rows["fp16"]["metrics"]["arc_easy"]["acc_norm"] == 0.658
    assert rows["fp16"]["headline"]["arc_easy"] == {"metric": "acc_norm", "value": 0.658, "stderr": 0.043}
    assert rows["fp16"]["headline"]["piqa"]["metric"] == "acc"
    assert rows["fp16"]["average"] is None  # three of the demo suite's five tasks not stored: no partial average
    assert rows["gptq-4"]["status"] == "unsupported" and "gptqmodel" in rows["gptq-4"]["error"]


def test_results_csv_and_table(tmp_path):
    db = stored_db(tmp_path)
    res = runner.invoke(app, ["results", "--db", db, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows[0]["arc_easy:acc_norm"] == "0.658" and rows[0]["arc_easy:acc_norm_stderr"] == "0.043"
    assert "arc_easy:acc" not in rows[0] and rows[0]["piqa:acc"] == "0.64"
    table = runner.invoke(app, ["results", "--db", db]).stdout
    assert "0.658 ± 0.043" in table and "0.640 ± 0.048" in table and "unsupported" in table


def test_the_suite_average_is_the_mean_of_its_headlines(tmp_path):
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    cell = expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[0]
    scores = {"arc_easy": 0.6, "arc_challenge": 0.3, "hellaswag": 0.4, "piqa": 0.7, "winogrande": 0.5}
    metrics = {t: {"acc": v - 0.1, "acc_stderr": 0.05, "acc_norm": v, "acc_norm_stderr": 0.04} for t, v in scores.items()}
    for t in ("piqa", "winogrande"):  # headlined by acc
        metrics[t] = {"acc": scores[t], "acc_stderr": 0.04}
    db = str(tmp_path / "e.db")
    Store(db).record(cell, {"status": "ok", "metrics": metrics}, None, "", 1.0)
    (rec,) = json.loads(runner.invoke(app, ["results", "--db", db, "--format", "json"]).stdout)
    assert rec["average"]["value"] == pytest.approx(0.5) and rec["average"]["stderr"] == pytest.approx(0.04 * 5 ** 0.5 / 5)
    (row,) = list(csv.DictReader(io.StringIO(runner.invoke(app, ["results", "--db", db, "--format", "csv"]).stdout)))
    assert float(row["average"]) == pytest.approx(0.5)
    assert "0.500 ± 0.018" in runner.invoke(app, ["results", "--db", db]).stdout


def test_export_of_a_cell_stored_without_lm_evals_results_exits_2(tmp_path):
    res = runner.invoke(app, ["export", "--format", "lm-eval", "--db", stored_db(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "re-run the cell with --force" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["export", "--format", "json", "--db", stored_db(tmp_path), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2  # typer: an unknown format
