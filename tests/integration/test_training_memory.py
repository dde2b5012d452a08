"""The planner's training formulas against real training steps of SmolLM2-135M
on the CPU (float32, AdamW): full fine-tuning and LoRA through peft."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def smollm2():
    from evalq.matrix import ModelSpec
    from evalq.model_sources import materialize

    return materialize(ModelSpec(name="SmolLM2-135M-Instruct", package="smollm2-135m-instruct"))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_training_step_needs_what_the_planner_predicts(smollm2, method, wikitext):
    from evalq.measure.training import measure_training_step
    from evalq.planner import Shape, lora_params, plan_training

    shape = Shape.from_config(json.loads((Path(smollm2.path) / "config.json").read_text()))
    measured = measure_training_step(smollm2.path, method, str(wikitext), sequence=256, steps=2)
    plan = plan_training(shape, method=method, sequence=256, batch=1, precision="fp32")
    assert measured["trainable_params"] == (shape.params if method == "full" else lora_params(shape, 16))
    assert measured["losses"][1] < measured["losses"][0] + 0.5  # it trained, it did not blow up
    # the band docs/metrics.md states for training steps on the CPU
    assert 0.8 <= measured["peak_bytes"] / plan.per_gpu_bytes <= 1.25, (measured, plan.as_dict())
