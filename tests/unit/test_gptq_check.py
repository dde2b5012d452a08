"""GPTQ group size is checked against config.json before any weights load."""
from __future__ import annotations

from evalq.backends.gptq import GPTQBackend, GPTQConfig
from evalq.backends.hf import linear_in_features

SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "head_dim": 64}
GEMMA3_270M = {"text_config": {"hidden_size": 640, "intermediate_size": 2048, "num_attention_heads": 4, "head_dim": 256}}


def cfg(group_size, tmp_path_factory=None):
    return GPTQConfig(group_size=group_size, checkpoint=None, calibration={"path": __file__})


def test_in_features_from_config():
    assert sorted(linear_in_features(SMOLLM2).values()) == [576, 576, 1536]
    assert sorted(linear_in_features(GEMMA3_270M).values()) == [640, 1024, 2048]


def test_group_128_fails_early_on_smollm2_and_names_the_fix():
    msg = GPTQBackend().check_model(cfg(128), SMOLLM2)
    assert "576" in msg and "hidden_size" in msg and "64" in msg


def test_valid_group_sizes_pass():
    assert GPTQBackend().check_model(cfg(64), SMOLLM2) is None
    assert GPTQBackend().check_model(cfg(128), GEMMA3_270M) is None
    assert GPTQBackend().check_model(cfg(-1), SMOLLM2) is None


def test_prequantized_checkpoint_is_not_checked():
    assert GPTQBackend().check_model(GPTQConfig(group_size=128, checkpoint="org/x-GPTQ"), SMOLLM2) is None
