"""awq-4 on SmolLM2-135M through the real worker (the shared SmolLM2 matrix, smollm2_run):
quantized by gptqmodel's AWQ on the CPU from seeded calibration windows, cached under a
content key, loaded through gptqmodel's AWQ kernel; weighs what the planner says to the
byte; compared with fp16 token by token; shown on the board."""
from __future__ import annotations

import json
from pathlib import Path
import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.paired import sanity_flags

pytestmark = pytest.mark.integration

LINEARS = 30 * 7



def test_awq_quantizes_for_real_and_weighs_what_the_planner_says(smollm2_rows):
    fp16, row = smollm2_rows["fp16"], smollm2_rows["awq-4"]
    assert row.status == "ok", row.error
    out = row.outcome
    assert out.weights_bytes == out.plan.predicted_weights_bytes  # its formula, to the byte
    assert out.weights_bytes < fp16.outcome.weights_bytes / 2
    assert out.details["quantized_modules"] == LINEARS and out.details["method"] == "awq"
    assert out.details["kernel"] and all("Awq" in k for k in out.details["kernel"])
    assert out.details["calibration"]["n_samples"] == 2 and out.details["zero_point"] is True
    assert 0 < out.quality.kld_mean < 0.5 and out.quality.same_top1 > 0.7
    assert out.metrics["evalq_demo_mc"]["acc"] is not None and out.speed.decode_tokens_per_s > 0
    assert sanity_flags(row, fp16) == []


def test_the_checkpoint_is_awq_and_says_how_it_was_made(smollm2_rows):
    folder = Path(smollm2_rows["awq-4"].outcome.details["checkpoint"])
    quant = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quant["quant_method"] == "awq" and quant["format"] == "gemm" and quant["bits"] == 4
    assert quant["group_size"] == 64 and quant["zero_point"] is True
    assert json.loads((folder / "evalq-calibration.json").read_text())["samples"] == 2
    log = (folder / "quant_log.csv").read_text().splitlines()  # AWQ's own per-module search
    assert log[0].startswith("layer,module,loss") and len(log) - 1 == LINEARS



def test_the_board_shows_it_with_its_marker(smollm2_run):
    res = CliRunner().invoke(app, ["leaderboard", "build", "--db", str(smollm2_run / "e.db"), "--out", str(smollm2_run / "site-awq")])
    assert res.exit_code == 0, res.output
    assert "awq-4" in (smollm2_run / "site-awq" / "frontier.html").read_text()
    assert 'fill="#ff9896"' in (smollm2_run / "site-awq" / "frontier.html").read_text()
