"""Serving under load through the real worker and real servers: SmolLM2 fp16 behind
transformers' own continuous-batching server and gguf-q4_k_m behind llama.cpp's
llama-server (built with the bindings), each driven at two request rates by the load
generator; the figures stored, shown by `evalq results` and on the leaderboard (a
throughput–latency chart per model, the equal-cost page's "within its SLO"), and no
server left running after its cell."""
from __future__ import annotations

import csv
import io
import json

import psutil
import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.store import Store

pytestmark = pytest.mark.integration

OUTPUT_TOKENS = 8
MATRIX = """\
name: it-serve
models:
  - name: SmolLM2-135M-Instruct
    package: smollm2-135m-instruct
variants:
  fp16: {{}}
  gguf-q4_k_m: {{}}
suites: [tiny]
perf: {{prompt_tokens: 32, new_tokens: 8, batch_sizes: [1], warmup: 1, repeats: 2, threads: 1}}
eval: {{batch_size: 8, limit: 8}}
serve:
  path: {wikitext}
  rates: [1, inf]
  duration_s: 4
  max_requests: 6
  prompt_tokens: 32
  output_tokens: {output_tokens}
  slots: 2
  single_stream: 3
  slo: {{ttft_ms: 60000, tpot_ms: 5000}}
timeout_s: 1200
"""


def servers_running() -> list[str]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "evalq.serve.hf_server" in cmd or "llama-server" in cmd:
            out.append(cmd)
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, wikitext):
    pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")
    folder = tmp_path_factory.mktemp("serve")
    matrix = folder / "m.yaml"
    matrix.write_text(MATRIX.format(wikitext=wikitext, output_tokens=OUTPUT_TOKENS))
    res = CliRunner().invoke(app, ["run", "--matrix", str(matrix), "--db", str(folder / "e.db")])
    assert res.exit_code == 0, res.output
    return folder, {r.variant: r for r in Store(str(folder / "e.db")).cells()}


def test_each_variant_is_served_by_its_runtime_and_measured(served):
    _, rows = served
    assert servers_running() == []  # every server ended with its cell
    for variant, kind in (("fp16", "transformers"), ("gguf-q4_k_m", "llama.cpp")):
        row = rows[variant]
        assert row.status == "ok", row.error
        sv = row.outcome.serve
        assert sv["server"] == kind and sv["threads"] == 1
        assert [s["rate"] for s in sv["steps"]] == [1.0, None]
        for step in sv["steps"]:
            assert step["completed"] == step["requests"] and step["errors"] == 0, step
            # every answer exactly output_tokens long (EOS ignored), counted from the stream
            assert step["output_tokens_per_s"] * step["wall_s"] == pytest.approx(step["completed"] * OUTPUT_TOKENS)
            for name in ("ttft_ms", "tpot_ms"):
                assert 0 < step[f"{name}_p50"] <= step[f"{name}_p90"] <= step[f"{name}_p99"], (variant, step)
            assert step["within_slo"] and step["goodput"] == pytest.approx(step["requests_per_s"])
        assert sv["max_rate_within_slo"] == "inf"  # a generous SLO: every rate met it
        assert sv["peak_rss_bytes"] > 50e6  # the serving process with its weights
        assert sv["batch1_decode_ms"] == row.outcome.speed.by_batch["1"]["decode_ms_median"]
        alone = sv["single_stream"]  # sent one at a time before the sweep
        assert alone["requests"] == alone["completed"] == 3 and alone["rate"] is None, (variant, alone)
        assert sv["single_stream_tpot_ratio"] == pytest.approx(alone["tpot_ms_p50"] / sv["batch1_decode_ms"])


def test_results_and_leaderboard_show_the_sweep(served, tmp_path):
    folder, _ = served
    runner = CliRunner()
    res = runner.invoke(app, ["results", "--db", str(folder / "e.db")])
    assert res.exit_code == 0, res.output
    assert "Serving under load" in res.output and "llama.cpp" in res.output and "transformers" in res.output
    assert res.output.count("1 by 1") == 3  # the title's legend and each cell's single-stream row
    res = runner.invoke(app, ["results", "--db", str(folder / "e.db"), "--format", "json"])
    records = json.loads(res.output)
    assert {r["variant"]: r["serve"]["server"] for r in records} == {"fp16": "transformers", "gguf-q4_k_m": "llama.cpp"}
    res = runner.invoke(app, ["results", "--db", str(folder / "e.db"), "--format", "csv"])
    rows = {r["variant"]: r for r in csv.DictReader(io.StringIO(res.output))}
    assert {v: r["serve_max_rate_within_slo"] for v, r in rows.items()} == {"fp16": "inf", "gguf-q4_k_m": "inf"}
    assert all(float(r["serve_saturation_output_tokens_per_s"]) > 0 for r in rows.values())
    site = tmp_path / "site"
    res = runner.invoke(app, ["leaderboard", "build", "--db", str(folder / "e.db"), "--out", str(site)])
    assert res.exit_code == 0, res.output
    (page,) = (site / "models").glob("*.html")
    html = page.read_text()
    assert html.count('class="chart serve"') == 2 and "Serving under load" in html
    assert html.count("<polyline") >= 4  # a line per variant in each chart
    assert "Best within its serving SLO" in (site / "equal-cost.html").read_text()
