"""nf4: bitsandbytes 4-bit NormalFloat, double quantization on by default."""
from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.hf import DtypeName, baseline_dtype, load_causal_lm, missing_module


class NF4Config(BackendConfig):
    double_quant: bool = Field(True, description="quantize the 4-bit scales too (QLoRA's double quantization)")
    compute_dtype: DtypeName = Field("auto", description="auto: the baseline dtype")
    dtype: DtypeName = Field("auto", description="dtype of the modules left unquantized: the baseline's")


NF4_BLOCK = 64  # bitsandbytes' 4-bit block
NESTED_BLOCK = 256  # double quantization: one float32 absmax per 256 8-bit absmax
NF4_CODE_BYTES = 16 * 4  # the NF4 code book, float32, per quantized tensor
NESTED_CODE_BYTES = 256 * 4  # the 8-bit dynamic map of the nested absmax, per tensor


def nf4_tensor_bytes(numel: int, double_quant: bool) -> int:
    blocks = math.ceil(numel / NF4_BLOCK)
    if double_quant:
        absmax = blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + NESTED_CODE_BYTES + 4  # uint8 + nested float32 + map + offset
    else:
        absmax = 4 * blocks
    return numel // 2 + absmax + NF4_CODE_BYTES


class NF4Backend(BackendBase):
    name: ClassVar[str] = "nf4"
    Config: ClassVar[type[BackendConfig]] = NF4Config
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "bitsandbytes")
    rank_key: ClassVar[tuple] = (0, 2)
    style: ClassVar[tuple[str, str]] = ("#2ca02c", "triangle")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("double quant", "double_quant"), ("compute", "compute_dtype"))
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 655_000_000, "cuda": 1_100_000_000}
    # bitsandbytes' CPU nf4 path in float32 (SmolLM2-135M, AVX2-only CPU, 2026-12-02): 1,415,503,872 and
    # 1,270,190,080 B measured where the bf16 constant predicted 758,529,208
    cpu_float32_overhead_bytes: ClassVar[int | None] = 1_212_000_000

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("bitsandbytes", "pip install bitsandbytes")

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        double = bool(options.get("double_quant", True))
        return sum(nf4_tensor_bytes(i * o, double) for i, o in shape.all_linears()) + shape.unquantized_bytes(dtype_bytes)

    def load(self, files: ModelFiles, cfg: NF4Config, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        import torch
        from transformers import BitsAndBytesConfig

        dtype = baseline_dtype(cfg.dtype, device)
        compute = baseline_dtype(cfg.compute_dtype, device)
        qcfg = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, compute),
        )
        model, tokenizer = load_causal_lm(files, resources, dtype, quantization_config=qcfg)
        details = {"dtype": dtype, "bits": 4, "double_quant": cfg.double_quant, "compute_dtype": compute, "block_size": 64}
        return Loaded(model, tokenizer, dtype, details)
