"""The memory planner's formulas against hand-computed cases, the papers' and
the seeds' figures, and `evalq plan`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.planner import (Shape, activation_training_bytes, kv_cache_bytes, lora_params, parse_bytes, plan_training,
                           shard_model_states, weights_bytes)

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

LLAMA2_7B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "intermediate_size": 11008, "tie_word_embeddings": False, "max_position_embeddings": 4096}
LLAMA31_8B = {**LLAMA2_7B, "vocab_size": 128256, "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 131072}
SMOLLM2 = {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "intermediate_size": 1536, "tie_word_embeddings": True, "max_position_embeddings": 8192}


def test_llama2_7b_weights_as_the_quantization_seed_tabulates():
    shape = Shape.from_config(LLAMA2_7B)
    assert shape.params == 6_738_415_616
    assert weights_bytes(shape, "fp16") / 1e9 == pytest.approx(13.48, abs=0.01)  # the seed: 13.5 GB
    assert weights_bytes(shape, "gptq-4", {"group_size": 128}) / 1e9 == pytest.approx(3.89, abs=0.01)  # the seed: ~3.9 GB


def test_smollm2_weights_by_hand():
    """30 layers × 3,538,944 linear weights = 106,168,320; embeddings 49,152 × 576 tied; 61 norms of 576."""
    s = Shape.from_config(SMOLLM2)
    assert (s.linear_params, s.other_params) == (106_168_320, 28_346_688)
    rotary = 2 * 32 * 4  # inv_freq and original_inv_freq, float32
    assert weights_bytes(s, "fp16") == 2 * 134_515_008 + rotary
    # int8: one byte per weight + a float32 scale per output row (30 × 5,184 rows)
    assert weights_bytes(s, "int8") == 106_168_320 + 4 * 30 * 5_184 + 2 * 28_346_688 + rotary
    # nf4, double quant: half a byte per weight, a uint8 absmax per 64, a float32 per 256 absmax, two code books, an offset
    nested = 4 * 30 * (21 + 7 + 7 + 21 + 54 * 3)
    assert weights_bytes(s, "nf4", {"double_quant": True}) == 53_084_160 + 1_658_880 + nested + 210 * (1024 + 64 + 4) + 2 * 28_346_688 + rotary
    # gptq-4, group 64: packed weights, packed zeros and float16 scales per group, int32 g_idx per input, 32 B per module
    gptq = 53_084_160 + 106_168_320 // 128 + 106_168_320 // 32 + 4 * 30 * (576 * 6 + 1536) + 32 * 210
    assert weights_bytes(s, "gptq-4", {"group_size": 64}) == gptq + 2 * 28_346_688 + rotary


def test_kv_cache_of_llama2_7b_at_4096_tokens_is_2_gib():
    assert kv_cache_bytes(Shape.from_config(LLAMA2_7B), 4096, 1) == 2 * 32 * 32 * 128 * 4096 * 2 == 2 * 2**30


@pytest.mark.parametrize("stage,per_gpu_gb", [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_stages_as_the_zero_paper(stage, per_gpu_gb):
    """Rajbhandari et al. 2020, Figure 1: Ψ = 7.5B, N_d = 64, K = 12 (mixed-precision Adam)."""
    psi = 7_500_000_000
    assert sum(shard_model_states(2 * psi, 2 * psi, 12 * psi, stage, 64)) / 1e9 == pytest.approx(per_gpu_gb, abs=0.05)


def test_the_training_seeds_8b_example():
    """The seed: 16 GB of weights, 96 GB of AdamW states, 16 GB of gradients for an 8B model; its activation
    bounds (41.6 GB < activations < 126 GB) do not follow from its own formula (see docs/metrics.md)."""
    shape = Shape.from_config(LLAMA31_8B)
    plan = plan_training(shape, sequence=4096, batch=1)
    assert plan.weights_bytes / 1e9 == pytest.approx(16.06, abs=0.01)
    assert plan.optimizer_bytes / 1e9 == pytest.approx(96.36, abs=0.01)
    assert plan.gradient_bytes == plan.weights_bytes
    # the seed's own inputs (h = 5325): upper bound 109.6 GB, lower bound 1.40 GB
    seed_shape = Shape(**{**shape.__dict__, "hidden": 5325})
    assert activation_training_bytes(seed_shape, 4096, 1, "none") / 1e9 == pytest.approx(109.63, abs=0.01)
    assert 2 * 4096 * 1 * 32 * 5325 / 1e9 == pytest.approx(1.396, abs=0.001)
    # Llama-3.1-8B's real h = 4096: 104.2 GB without recomputation
    assert activation_training_bytes(shape, 4096, 1, "none") / 1e9 == pytest.approx(104.15, abs=0.01)


def test_recomputation_orders_activation_memory():
    s = Shape.from_config(LLAMA2_7B)
    none, selective, full = (activation_training_bytes(s, 4096, 1, r) for r in ("none", "selective", "full"))
    assert full < selective < none
    assert selective == 32 * 4096 * 4096 * 34  # the 5·a·s/h attention term is what selective recomputation drops
    assert full == 32 * 2 * 4096 * 4096 + 4096 * 4096 * (34 + 5 * 32)  # inputs of every layer + one layer recomputed


def test_hybrid_sharding_and_offload():
    s = Shape.from_config(LLAMA2_7B)
    full = plan_training(s, zero=3, gpus=64)
    hybrid = plan_training(s, zero=3, gpus=64, shard_group=8)
    assert hybrid.optimizer_bytes == pytest.approx(full.optimizer_bytes * 8, rel=1e-6)
    assert hybrid.gathered_bytes == full.gathered_bytes > 0
    offloaded = plan_training(s, zero=2, gpus=8, offload_optimizer=True)
    assert offloaded.optimizer_bytes == 0 and offloaded.offloaded_bytes == pytest.approx(12 * s.params / 8, rel=1e-6)
    with pytest.raises(ValueError, match="must divide"):
        plan_training(s, zero=3, gpus=12, shard_group=8)


def test_lora_and_qlora_train_a_few_million_parameters():
    s = Shape.from_config(SMOLLM2)
    assert lora_params(s, 16) == 30 * 16 * (1152 + 2 * 768 + 1152 + 2 * 2112 + 2112) == 4_884_480
    lora, qlora, full = (plan_training(s, method=m, sequence=512) for m in ("lora", "qlora", "full"))
    assert lora.optimizer_bytes == qlora.optimizer_bytes == 8 * 4_884_480
    assert qlora.weights_bytes < lora.weights_bytes < full.weights_bytes + full.optimizer_bytes
    # gradients still flow through every layer; peft's LoRA layers keep a measured 40·s·b·h more per layer
    assert lora.activation_bytes == full.activation_bytes + 40 * 512 * 576 * 30


@pytest.mark.parametrize("text,value", [("80GB", 80e9), ("24 GiB", 24 * 2**30), ("1.5e10", 1.5e10), ("512MB", 512e6)])
def test_sizes(text, value):
    assert parse_bytes(text) == int(value)


def test_plan_json_for_the_demo_and_a_local_config_for_an_offline_hub_model(tmp_path):
    res = runner.invoke(app, ["plan", "--matrix", str(ROOT / "examples" / "showcase.yaml"), "--gpu-memory", "2GB", "-f", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 14 and {"model", "variant", "predicted_weights_bytes", "predicted_peak_bytes", "fits"} <= set(rows[0])
    smol = {r["variant"]: r for r in rows if r["model"].startswith("SmolLM2")}
    assert smol["int8"]["predicted_weights_bytes"] == 163_484_032  # as measured on the loaded model (docs/metrics.md)
    assert all(r["fits"] for r in smol.values()) and not all(r["fits"] for r in rows)

    config = tmp_path / "config.json"
    config.write_text(json.dumps(LLAMA2_7B))
    res = runner.invoke(app, ["plan", "--matrix", str(ROOT / "examples" / "llama2.yaml"), "--config", f"Llama-2-7B={config}",
                              "-f", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    seven = {r["variant"]: r for r in rows if r["model"] == "Llama-2-7B"}
    assert seven["fp16"]["predicted_weights_bytes"] == weights_bytes(Shape.from_config(LLAMA2_7B), "fp16") and seven["fp16"]["fits"]
    assert all("not available here" in r["error"] and r["fits"] is None for r in rows if r["model"] == "Llama-2-13B")


def test_plan_training_fewest_gpus():
    res = runner.invoke(app, ["plan", "--matrix", str(ROOT / "examples" / "showcase.yaml"), "--training", "full", "--zero", "3",
                              "--gpu-memory", "2GB", "--seq", "512", "--recompute", "full", "-f", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["variant"] for r in rows] == ["train-full", "train-full"]
    assert all(r["fewest_gpus"] and r["fewest_gpus"] > 1 for r in rows)


def test_plan_refuses_a_config_for_no_model(tmp_path):
    res = runner.invoke(app, ["plan", "--matrix", str(ROOT / "examples" / "showcase.yaml"), "--config", f"Nope={tmp_path}"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_run_skips_cells_predicted_not_to_fit_without_loading_them(tmp_path):
    from evalq.store import Store

    db = str(tmp_path / "e.db")
    res = runner.invoke(app, ["run", "--matrix", str(ROOT / "examples" / "showcase.yaml"), "--db", db, "--gpu-memory", "500MB"])
    assert res.exit_code == 0, res.output
    rows = {(r.model, r.variant): r for r in Store(db).cells()}
    assert {r.status for r in rows.values()} == {"skipped"}  # the framework overhead alone is predicted above 0.5 GB
    gemma = rows[("Gemma-3-270M", "fp16")]
    assert "predicted peak" in gemma.error and "exceeds 0.50 GB" in gemma.error
    assert gemma.result["plan"]["predicted_weights_bytes"] > 5e8 and gemma.wall_seconds == 0.0


def test_cpu_float32_nf4_overhead_is_its_own_fitted_constant():
    from evalq.backends.base import get_backend
    from evalq.planner import overhead_bytes

    nf4, int8, fp16 = get_backend("nf4"), get_backend("int8"), get_backend("fp16")
    assert overhead_bytes("cpu", "nf4", 2) == nf4.overhead_bytes["cpu"]
    assert overhead_bytes("cpu", "nf4", 4) == nf4.cpu_float32_overhead_bytes > nf4.overhead_bytes["cpu"]
    assert overhead_bytes("cuda", "nf4", 4) == nf4.overhead_bytes["cuda"]
    assert overhead_bytes("cpu", "int8", 4) == int8.cpu_float32_overhead_bytes
    assert overhead_bytes("cpu", "fp16", 4) == fp16.overhead_bytes["cpu"]
    assert overhead_bytes("cpu", "gguf-q2_k") == get_backend("gguf-q8_0").overhead_bytes["cpu"]  # one constant for the family