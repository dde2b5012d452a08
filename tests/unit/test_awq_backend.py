"""awq-4: registered, planned by its GEMM layout, checked against the model before it loads."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from evalq.architecture import Shape
from evalq.backends.base import backend_names, get_backend, variant_rank, variant_style

SMOLLM2 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9,
           "num_key_value_heads": 3, "head_dim": 64, "num_hidden_layers": 30, "vocab_size": 49152,
           "tie_word_embeddings": True}
CAL = {"path": __file__, "n_samples": 2, "seq_len": 8}


def test_registered_beside_gptq_and_drawn_apart():
    assert "awq-4" in backend_names()
    assert sorted(["gptq-4", "hqq-4", "awq-4", "nf4"], key=variant_rank) == ["nf4", "awq-4", "gptq-4", "hqq-4"]
    others = {variant_style(v) for v in ("fp16", "int8", "nf4", "gptq-4", "hqq-4", "torchao-int8wo")}
    assert variant_style("awq-4") not in others


def test_weights_formula_matches_what_gptqmodel_loaded():
    shape = Shape.from_config(SMOLLM2)
    awq = get_backend("awq-4")
    # measured on SmolLM2-135M quantized here (group 64), loaded in bfloat16 and in float32
    assert awq.weights_bytes(shape, {"group_size": 64}, 2) == 113_924_992
    assert awq.weights_bytes(shape, {"group_size": 64}, 4) == 173_936_128
    assert awq.weights_bytes(shape, {"group_size": 128}, 2) < 113_924_992


def test_config_and_model_checks():
    awq = get_backend("awq-4")
    with pytest.raises(ValidationError, match="give calibration"):
        awq.Config()
    with pytest.raises(ValidationError, match="group_size must be one of"):
        awq.Config(group_size=100, calibration=CAL)
    with pytest.raises(ValidationError, match="bits"):
        awq.Config(bits=3, calibration=CAL)
    assert awq.check_model(awq.Config(group_size=64, calibration=CAL), SMOLLM2) is None
    assert "group_size 128 does not divide hidden_size" in awq.check_model(awq.Config(group_size=128, calibration=CAL), SMOLLM2)
    assert awq.check_model(awq.Config(group_size=128, checkpoint="org/m-awq"), SMOLLM2) is None  # its own group size
    gemma3 = {"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048}
    assert "cannot run Gemma 3" in awq.check_model(awq.Config(group_size=64, calibration=CAL), gemma3)
    assert awq.check_model(awq.Config(checkpoint="org/gemma-awq"), gemma3) is None
