"""hqq-4 on SmolLM2-135M through the real worker (the shared SmolLM2 matrix, smollm2_run):
quantized by the `hqq` package on the CPU at load, no calibration; weighs what the planner
says to the byte (its scales and zero points included); compared with fp16 token by token;
shown on the board."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.paired import sanity_flags

pytestmark = pytest.mark.integration

LINEARS = 30 * 7  # SmolLM2's layers × projections; the tied lm_head stays the embedding



def test_hqq_quantizes_for_real_and_weighs_what_the_planner_says(smollm2_rows):
    fp16, row = smollm2_rows["fp16"], smollm2_rows["hqq-4"]
    assert row.status == "ok", row.error
    out = row.outcome
    assert out.weights_bytes == out.plan.predicted_weights_bytes  # its formula, to the byte
    assert out.weights_bytes < fp16.outcome.weights_bytes / 2  # 4-bit codes: not the float32 weights
    assert out.details["quantized_modules"] == LINEARS and out.details["module_types"].get("HQQLinear") == LINEARS
    assert out.details["hqq"] and out.details["group_size"] == 64 and out.details["backend"] == ["PYTORCH"]
    assert out.prepare_seconds > 0  # quantized at load: HQQ's optimizer ran
    assert 0 < out.quality.kld_mean < 0.5 and out.quality.same_top1 > 0.7
    assert out.metrics["evalq_demo_mc"]["acc"] is not None and out.speed.decode_tokens_per_s > 0
    assert sanity_flags(row, fp16) == []



def test_the_board_shows_it_with_its_marker(smollm2_run):
    res = CliRunner().invoke(app, ["leaderboard", "build", "--db", str(smollm2_run / "e.db"), "--out", str(smollm2_run / "site-hqq")])
    assert res.exit_code == 0, res.output
    frontier = (smollm2_run / "site-hqq" / "frontier.html").read_text()
    assert "hqq-4" in frontier and 'fill="#d62728"' in frontier
    assert "group 64, axis 1, kernel PYTORCH" in (smollm2_run / "site-hqq" / "index.html").read_text()
