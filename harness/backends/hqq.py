"""hqq-<bits> (hqq-8, hqq-4, hqq-3, hqq-2): Half-Quadratic Quantization (the `hqq`
package), no calibration data.

The model loads in its baseline dtype and every linear layer (not the tied lm_head) is
replaced by hqq's HQQLinear: codes packed by hqq (8 and 4 bits in bytes, two 4-bit codes a
byte; 2 bits four a byte; 3 bits ten to an int32, the groups padded to a multiple of ten), a
scale and a zero point per group of `group_size` weights, found by HQQ's own optimizer in a
few seconds per layer.
Through the `hqq` package directly: transformers 5's HqqConfig raised NotImplementedError
here. The scale and zero point live in HQQLinear.meta, not in parameters; measure/torch_model
counts them.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field, field_validator

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.hf import DtypeName, baseline_dtype, group_size_misfit, load_causal_lm, missing_module

PREFIX = "hqq-"
BITS = (8, 4, 3, 2)  # hqq's packed widths (its 6, 5 and 1.58 bits are stored as 8 or 2)
COLOURS = {8: "#ff9896", 4: "#d62728", 3: "#a01c1c", 2: "#5c0f0f"}


def variant_names() -> list[str]:
    return [f"{PREFIX}{b}" for b in BITS]


def code_bytes(in_features: int, out_features: int, bits: int, group_size: int) -> int:
    """The packed codes of one linear layer, as hqq's BitPack stores them."""
    if bits == 3:
        groups = in_features * out_features // group_size
        return -(-groups // 10) * group_size * 4
    return in_features * out_features * bits // 8


class HQQConfig(BackendConfig):
    group_size: int = Field(64, description="weights per scale and zero point: a multiple of 8 dividing every in_features")
    axis: int = Field(1, description="1: groups run along a row (in_features), hqq's default; 0: along a column")
    dtype: DtypeName = Field("auto", description="the compute dtype and that of the unquantized modules and the scales: the baseline's")

    @field_validator("group_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v <= 0 or v % 8:
            raise ValueError(f"group_size must be a positive multiple of 8, got {v}")
        return v

    @field_validator("axis")
    @classmethod
    def _axis(cls, v: int) -> int:
        if v not in (0, 1):
            raise ValueError(f"axis must be 0 or 1, got {v}")
        return v


class HQQBackend(BackendBase):
    Config: ClassVar[type[BackendConfig]] = HQQConfig
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "hqq")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("group", "group_size"), ("axis", "axis"), ("kernel", "backend"))
    # not fitted yet: nf4's bf16 constant until a demo run measures it
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 655_000_000, "cuda": 1_100_000_000}

    def __init__(self, name: str = "hqq-4"):
        if name not in variant_names():
            raise KeyError(name)
        self.name, self.bits = name, int(name.removeprefix(PREFIX))
        self.style = (COLOURS[self.bits], "triangle-down")

    @staticmethod
    def variant_names() -> list[str]:
        return variant_names()

    def rank(self) -> tuple:
        return (0, 4, -self.bits, self.name)  # after gptq-4, most bits first

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("hqq", "pip install hqq")

    def check_model(self, cfg: HQQConfig, model_config: dict[str, Any]) -> str | None:
        if cfg.axis == 0:  # groups run down a column: out_features must divide instead, not known from every config
            return None
        misfit = group_size_misfit(cfg.group_size, model_config)
        return f"{self.name}: {misfit}" if misfit else None

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        # packed codes; a scale and a zero point per group, in the compute dtype. HQQ casts
        # every other module to the compute dtype, the rotary embedding's float32 buffers included
        group = int(options.get("group_size", 64))
        return (sum(code_bytes(i, o, self.bits, group) + 2 * dtype_bytes * (i * o // group) for i, o in shape.all_linears())
                + shape.unquantized_bytes(dtype_bytes, buffer_dtype_bytes=dtype_bytes))

    def load(self, files: ModelFiles, cfg: HQQConfig, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        import hqq
        import torch
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
        from hqq.models.hf.base import AutoHQQHFModel

        dtype = baseline_dtype(cfg.dtype, device)
        model, tokenizer = load_causal_lm(files, resources, dtype)
        started = time.perf_counter()
        quant = BaseQuantizeConfig(nbits=self.bits, group_size=cfg.group_size, axis=cfg.axis)
        AutoHQQHFModel.quantize_model(model, quant_config=quant, compute_dtype=getattr(torch, dtype), device=device)
        seconds = time.perf_counter() - started
        backends = sorted({str(m.backend).removeprefix("HQQBackend.") for m in model.modules() if isinstance(m, HQQLinear)})
        details = {"dtype": dtype, "bits": self.bits, "group_size": cfg.group_size, "axis": cfg.axis, "backend": backends,
                   "hqq": getattr(hqq, "__version__", None)}
        # HQQ quantizes at every load (seconds, no calibration): that is the variant's one-off work
        return Loaded(model.eval(), tokenizer, dtype, details, prepare_seconds=seconds)
