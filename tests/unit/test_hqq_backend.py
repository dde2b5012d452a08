"""hqq-<bits>: registered, planned by its own formula, checked against the model before it loads."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from evalq.resources import Resources
from evalq.architecture import Shape
from evalq.backends.base import backend_names, get_backend, variant_rank, variant_style

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
           "num_key_value_heads": 3, "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152,
           "tie_word_embeddings": True}


def test_registered_ranked_and_drawn_apart():
    assert "hqq-4" in backend_names()
    assert sorted(["torchao-int8wo", "hqq-4", "gptq-4", "nf4"], key=variant_rank) == ["nf4", "gptq-4", "hqq-4", "torchao-int8wo"]
    others = {variant_style(v) for v in ("fp16", "int8", "nf4", "gptq-4", "torchao-int8wo", "torchao-fp8wo")}
    assert variant_style("hqq-4") not in others
    assert {"hqq-8", "hqq-3", "hqq-2"} <= set(backend_names()) and "hqq-5" not in backend_names()
    assert sorted(["hqq-2", "hqq-8", "torchao-int8wo", "hqq-3", "hqq-4"], key=variant_rank) == ["hqq-8", "hqq-4", "hqq-3", "hqq-2", "torchao-int8wo"]
    assert len({variant_style(f"hqq-{b}") for b in (8, 4, 3, 2)}) == 4


def test_weights_formula_counts_codes_scales_and_zero_points():
    shape = Shape.from_config(SMOLLM2)
    hqq = get_backend("hqq-4")
    got = hqq.weights_bytes(shape, {"group_size": 64}, 4)
    assert got == sum(i * o // 2 + 2 * 4 * (i * o // 64) for i, o in shape.all_linears()) + shape.unquantized_bytes(4, buffer_dtype_bytes=4)
    # larger groups: fewer scales; a 2-byte compute dtype halves them and the unquantized modules
    assert hqq.weights_bytes(shape, {"group_size": 128}, 4) < got
    assert hqq.weights_bytes(shape, {"group_size": 64}, 2) < got
    # HQQ casts every other module to its compute dtype, the rotary buffers (float32 otherwise) too
    bf16 = hqq.weights_bytes(shape, {"group_size": 64}, 2)
    assert bf16 == sum(i * o // 2 + 2 * 2 * (i * o // 64) for i, o in shape.all_linears()) + shape.unquantized_bytes(2, 2)
    assert shape.unquantized_bytes(2) - shape.unquantized_bytes(2, 2) == 2 * shape.rotary_buffer_values == 128


def test_three_bit_codes_pack_ten_to_an_int32_per_ten_groups():
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    from evalq.backends.hqq import code_bytes

    for bits in (8, 4, 3, 2):
        for i, o in ((576, 1536), (576, 192), (640, 2048)):
            q = HQQLinear(torch.nn.Linear(i, o, bias=False), BaseQuantizeConfig(nbits=bits, group_size=64, axis=1),
                          compute_dtype=torch.float32, device="cpu")
            assert q.W_q.numel() * q.W_q.element_size() == code_bytes(i, o, bits, 64), (bits, i, o)
    shape = Shape.from_config(SMOLLM2)
    three, two = (get_backend(f"hqq-{b}").weights_bytes(shape, {"group_size": 64}, 4) for b in (3, 2))
    assert two < three < get_backend("hqq-4").weights_bytes(shape, {"group_size": 64}, 4)


def test_group_size_is_checked_by_the_config_and_against_the_model():
    hqq = get_backend("hqq-4")
    with pytest.raises(ValidationError, match="multiple of 8"):
        hqq.Config(group_size=60)
    with pytest.raises(ValidationError, match="axis must be 0 or 1"):
        hqq.Config(axis=2)
    assert hqq.check_model(hqq.Config(group_size=64), SMOLLM2) is None
    assert "does not divide hidden_size (q/k/v/gate/up_proj) = 576" in hqq.check_model(hqq.Config(group_size=256), SMOLLM2)
    assert hqq.check_model(hqq.Config(group_size=256, axis=0), SMOLLM2) is None


@pytest.mark.parametrize("bits", [3, 2])
def test_low_bit_variants_load_quantized_and_weigh_what_the_planner_says(tiny_model_factory, bits):
    import json

    import torch
    from hqq.core.quantize import HQQLinear

    from evalq.backends.base import ModelFiles
    from evalq.measure.memory import weights_footprint

    folder = tiny_model_factory()
    hqq = get_backend(f"hqq-{bits}")
    loaded = hqq.load(ModelFiles(str(folder), "sha256:tiny"), hqq.Config(dtype="float32"), Resources(), str(folder))
    linears = [m for m in loaded.model.modules() if isinstance(m, HQQLinear)]
    assert len(linears) == 2 * 7 and {m.meta["nbits"] for m in linears} == {bits}
    assert loaded.details["bits"] == bits and loaded.prepare_seconds > 0
    shape = Shape.from_config(json.loads((folder / "config.json").read_text()))
    assert weights_footprint(loaded.model) == hqq.weights_bytes(shape, {"group_size": 64}, 4)
    with torch.no_grad():
        logits = loaded.model(torch.tensor([[1, 5, 9, 13]])).logits
    assert torch.isfinite(logits).all()
