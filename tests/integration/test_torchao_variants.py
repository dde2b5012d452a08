"""torchao's variants on SmolLM2-135M (issue 18, the torchao part). int8 weight-only runs
through the real worker in the shared SmolLM2 matrix (smollm2_run): quantized for real on
the CPU, weighing what the planner says to the byte, compared with fp16 token by token,
shown on the board. int8 dynamic activations × int8 weights (w8a8) is loaded and compared
here directly (a whole cell takes ~200 s on a CPU). int4 weight-only is `unsupported` on a
CPU, with the reason, before any model loads; so is float8 W8A8 (a GPU of compute
capability 8.9+), while float8 weight-only (fp8wo) runs here and is loaded directly."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from evalq.resources import Resources
from evalq.architecture import DTYPE_BYTES
from evalq.cli import app
from evalq.paired import sanity_flags

pytestmark = pytest.mark.integration

LINEARS = 30 * 7  # SmolLM2's layers × projections
# measured = predicted: int8 values + fp32 scale + int8 zero point per row, the rest in the model's dtype:
# float32 on an AVX2 EPYC, bfloat16 on a Xeon with native bf16 (issue 31), by the bytes of that dtype
INT8_WEIGHTS = {4: 220_332_928, 2: 163_639_552}
ROWS = 30 * (3 * 576 + 2 * 192 + 2 * 1536)  # output rows of SmolLM2's projections
FP8_WEIGHTS = INT8_WEIGHTS[4] - ROWS  # float32, without the zero points: one byte a row less



def test_int8_weight_only_quantizes_for_real_and_weighs_what_the_planner_says(smollm2_rows):
    fp16, row = smollm2_rows["fp16"], smollm2_rows["torchao-int8wo"]
    assert row.status == "ok", row.error
    out = row.outcome
    assert out.weights_bytes == out.plan.predicted_weights_bytes == INT8_WEIGHTS[DTYPE_BYTES[out.dtype]]  # to the byte
    assert out.details["quantized_modules"] == LINEARS and out.details["config"] == "Int8WeightOnlyConfig"
    assert out.details["torchao"] and out.details["scheme"] == "int8wo"
    assert 0 < out.quality.kld_mean < 0.02 and out.quality.same_top1 > 0.9  # close to fp16, not identical
    assert out.metrics["evalq_demo_mc"]["acc"] is not None and out.speed.decode_tokens_per_s > 0
    assert sanity_flags(row, fp16) == []
    assert fp16.outcome.details["quantized_modules"] == 0  # plain Linears are not counted



def test_w8a8_quantizes_weights_and_activations(wikitext):
    import torch

    from evalq.architecture import Shape
    from evalq.backends.base import get_backend
    from evalq.matrix import ModelSpec
    from evalq.measure.memory import quantized_modules, weights_footprint
    from evalq.model_sources import materialize, read_config

    spec = ModelSpec(package="smollm2-135m-instruct")
    files, shape = materialize(spec), Shape.from_config(read_config(spec))
    fp16, w8a8, int8wo = (get_backend(v) for v in ("fp16", "torchao-w8a8", "torchao-int8wo"))
    base = fp16.load(files, fp16.Config(dtype="float32"), Resources(), "").model
    loaded = w8a8.load(files, w8a8.Config(dtype="float32"), Resources(), "")
    assert weights_footprint(loaded.model) == w8a8.weights_bytes(shape, {}, 4) == INT8_WEIGHTS[4]
    assert quantized_modules(loaded.model) == LINEARS and quantized_modules(base) == 0
    assert loaded.details["config"] == "Int8DynamicActivationInt8WeightConfig"
    weight_only = int8wo.load(files, int8wo.Config(dtype="float32"), Resources(), "").model
    ids = loaded.tokenizer(wikitext.read_text()[:2000], return_tensors="pt").input_ids[:, :128]
    with torch.no_grad():
        ref, act, wo = (m(ids).logits.log_softmax(-1) for m in (base, loaded.model, weight_only))
    kld = lambda q: (ref.exp() * (ref - q)).sum(-1).mean().item()  # noqa: E731
    assert 0 < kld(wo) < kld(act) < 0.1  # the activations' rounding adds to the weights'


def test_fp8_weight_only_keeps_float8_weights_on_a_cpu(wikitext):
    import torch

    from evalq.architecture import Shape
    from evalq.backends.base import get_backend
    from evalq.matrix import ModelSpec
    from evalq.measure.memory import quantized_modules, weights_footprint
    from evalq.model_sources import materialize, read_config

    spec = ModelSpec(package="smollm2-135m-instruct")
    files, shape = materialize(spec), Shape.from_config(read_config(spec))
    fp16, fp8 = get_backend("fp16"), get_backend("torchao-fp8wo")
    base = fp16.load(files, fp16.Config(dtype="float32"), Resources(), "").model
    loaded = fp8.load(files, fp8.Config(dtype="float32"), Resources(), "")
    assert weights_footprint(loaded.model) == fp8.weights_bytes(shape, {}, 4) == FP8_WEIGHTS
    assert quantized_modules(loaded.model) == LINEARS and loaded.details["config"] == "Float8WeightOnlyConfig"
    weight = loaded.model.model.layers[0].mlp.down_proj.weight
    assert weight.qdata.dtype == torch.float8_e4m3fn and weight.scale.shape == (576, 1)  # a float32 scale per row
    ids = loaded.tokenizer(wikitext.read_text()[:2000], return_tensors="pt").input_ids[:, :128]
    with torch.no_grad():
        ref, q = (m(ids).logits.log_softmax(-1) for m in (base, loaded.model))
    kld = (ref.exp() * (ref - q)).sum(-1).mean().item()
    assert 0 < kld < 0.1
    assert "compute capability 8.9" in get_backend("torchao-fp8").unavailable_reason("cpu")  # W8A8 FP8: GPUs only


def test_int4_weight_only_is_unsupported_on_a_cpu_with_the_reason():
    from evalq.backends.base import get_backend

    reason = get_backend("torchao-int4wo").unavailable_reason("cpu")
    assert reason and "need CUDA" in reason and "mslk" in reason


def test_the_board_shows_them_with_their_markers(smollm2_run):
    res = CliRunner().invoke(app, ["leaderboard", "build", "--db", str(smollm2_run / "e.db"), "--out", str(smollm2_run / "site-torchao")])
    assert res.exit_code == 0, res.output
    frontier = (smollm2_run / "site-torchao" / "frontier.html").read_text()
    assert "torchao-int8wo" in frontier and 'fill="#17becf"' in frontier
