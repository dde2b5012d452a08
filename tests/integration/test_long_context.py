"""KV-cache types at long context through the real worker (the shared SmolLM2 matrix,
smollm2_run): every cell scores the late tokens of a 512-token WikiText-2 window through
each of the matrix's cache types its runtime has — transformers' quantized cache (HQQ) for the transformers
variants, llama.cpp's type_k/type_v for the GGUF ones — against the fp16 weights with the
unquantized cache, and measures the cache's bytes beside the planner's."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from evalq.cli import app

from evalq.kv_cache import RUNTIMES

from smollm2_matrix import KV_TYPES, smollm2_variants

pytestmark = pytest.mark.integration

LAYERS, CELLS = 30, 512  # SmolLM2's layers; the window's tokens (llama.cpp keeps one cell each)
UNDER = {"float32": 3, "bfloat16": 2, "float16": 2}  # hqq-4's cache is under 1/n of the cache in this dtype


def kv(row) -> dict:
    """The cell's figures per cache type: the matrix's types its runtime has, in the matrix's order."""
    assert row.status == "ok", row.error
    lc = row.outcome.long_context
    assert lc["context"] == 512 and lc["scored"] == 64 and lc["chunk"] == 32
    assert list(lc["types"]) == [t for t in KV_TYPES if t in RUNTIMES[lc["runtime"]]]
    return lc["types"]


def test_the_baseline_against_itself_is_exact(smollm2_rows):
    f16 = kv(smollm2_rows["fp16"])["f16"]
    assert f16["status"] == "ok" and f16["n_tokens"] == 64
    assert f16["kld_mean"] == 0 and f16["same_top1"] == 1 and f16["ppl_ratio"] == 1


def test_transformers_variants_run_their_quantized_cache_to_the_byte(smollm2_rows):
    for variant, row in smollm2_rows.items():
        if variant.startswith("gguf-"):
            continue
        types = kv(row)
        assert row.outcome.long_context["runtime"] == "transformers"
        for kv_type in ("f16", "hqq-4"):
            t = types[kv_type]
            assert t["status"] == "ok", (variant, t)
            assert t["kv_bytes"] == t["kv_bytes_predicted"], (variant, kv_type)
        # really quantized: 4-bit codes with a scale and zero per 64 values (and up to 127 tokens
        # waiting unquantized), not the cache in the model's dtype: under a third of a float32
        # cache, under half of a 16-bit one; and the output moved (a cache left unquantized
        # would match f16's figures exactly)
        assert types["hqq-4"]["kv_bytes"] < types["f16"]["kv_bytes"] / UNDER[row.outcome.dtype], (variant, row.outcome.dtype)
        assert types["hqq-4"]["kld_mean"] != types["f16"]["kld_mean"], variant
    fp16 = kv(smollm2_rows["fp16"])
    assert 0.001 < fp16["hqq-4"]["kld_mean"] < 0.5 and fp16["hqq-4"]["same_top1"] > 0.7


def test_gguf_variants_run_llama_cpp_cache_types(smollm2_rows):
    for variant, row in smollm2_rows.items():
        if not variant.startswith("gguf-"):
            continue
        types = kv(row)
        assert row.outcome.long_context["runtime"] == "llama.cpp"
        for kv_type in ("f16", "q8_0", "q4_0"):
            t = types[kv_type]
            assert t["status"] == "ok", (variant, t)
            # llama.cpp's sequence state: the K and V rows in their type, plus positions per cell
            # and a type and row size per layer (about 13 bytes a cell here)
            assert 0 < t["kv_bytes"] - t["kv_bytes_predicted"] <= 16 * CELLS + 64 * LAYERS, (variant, kv_type)
        assert types["q4_0"]["kv_bytes"] < types["q8_0"]["kv_bytes"] < types["f16"]["kv_bytes"]
    # the 4-bit cache moves the output further from the baseline than the float16 one, on the same weights
    q8 = kv(smollm2_rows["gguf-q8_0"])
    assert q8["q4_0"]["kld_mean"] > q8["f16"]["kld_mean"]


def test_results_prints_the_long_context_table(smollm2_run):
    res = CliRunner().invoke(app, ["results", "--db", str(smollm2_run / "e.db")])
    assert res.exit_code == 0, res.output
    assert "KV cache at long context (512-token windows, last 64 scored, × 1)" in res.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in res.output.splitlines() if line.startswith("│")]
    kv_rows = {(c[1], c[2]): c for c in cells if len(c) == 10}  # the KV table's (the results table has more columns)
    for variant in smollm2_variants():
        quantized = kv_rows[(variant, "q4_0" if variant.startswith("gguf-") else "hqq-4")]
        assert " ± " in quantized[3] and int(quantized[6].replace(",", "")) > 0
