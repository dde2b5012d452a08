"""The "really quantized" checks can fail: the fp16 load's own figures stored under a
quantized variant's name are flagged twice (no module of the quantization library, and a
footprint not below fp16's), for every quantized transformers variant of the shared
SmolLM2 matrix; the real cells of those variants are not flagged."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from evalq.paired import sanity_flags

pytestmark = pytest.mark.integration

QUANTIZED = ("int8", "nf4", "gptq-4", "awq-4", "hqq-4", "torchao-int8wo")


@pytest.mark.parametrize("variant", QUANTIZED)
def test_an_unquantized_load_is_flagged_and_the_real_one_is_not(smollm2_rows, variant):
    fp16, real = smollm2_rows["fp16"], smollm2_rows[variant]
    bits = real.outcome.details["bits"]
    unquantized = fp16.outcome.model_copy(update={"details": {**fp16.outcome.details, "bits": bits}})
    fake = SimpleNamespace(variant=variant, status="ok", outcome=unquantized, weights_bytes=fp16.weights_bytes)
    flags = sanity_flags(fake, fp16)
    assert "no quantized module in the loaded model" in flags and any("not quantized?" in f for f in flags)
    assert sanity_flags(real, fp16) == []
