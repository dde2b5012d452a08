"""torchao-<scheme>: PyTorch's own quantization (torchao) through transformers' TorchAoConfig.

- torchao-int8wo: int8 weight-only, one float32 scale per output row (Int8WeightOnlyConfig)
- torchao-w8a8:   int8 weights as above, activations quantized to int8 per token at run time
                  (Int8DynamicActivationInt8WeightConfig)
- torchao-int4wo: int4 weight-only in groups (Int4WeightOnlyConfig); its kernels come from
                  CUDA libraries (torchao 0.18: `mslk`), so on a CPU the cell is `unsupported`
- torchao-fp8wo:  float8 (e4m3) weights, one float32 scale per output row, computed in the
                  model's dtype (Float8WeightOnlyConfig); runs on a CPU
- torchao-fp8:    float8 weights and float8 dynamic per-row activations, the FP8 W8A8 of
                  current GPUs (Float8DynamicActivationFloat8WeightConfig): CUDA with compute
                  capability 8.9 or more (Ada, Hopper, Blackwell), else `unsupported`

Weights become torchao tensor subclasses inside the usual nn.Linear; measure/torch_model
counts their inner tensors (qdata, scale, zero point) for the footprint and counts such
Linears as quantized.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.hf import DtypeName, baseline_dtype, group_size_misfit, load_causal_lm, missing_module

PREFIX = "torchao-"
# scheme → (bits, chart colour and marker, what it is)
SCHEMES: dict[str, tuple[int, tuple[str, str], str]] = {
    "int8wo": (8, ("#17becf", "pentagon"), "int8 weight-only, per-row scale"),
    "w8a8": (8, ("#bcbd22", "star"), "int8 weights, int8 dynamic per-token activations"),
    "int4wo": (4, ("#393b79", "triangle-down"), "int4 weight-only, grouped"),
    "fp8wo": (8, ("#e377c2", "hexagon"), "float8 e4m3 weight-only, per-row scale"),
    "fp8": (8, ("#8c564b", "triangle"), "float8 e4m3 weights and dynamic per-row activations (W8A8)"),
}
FP8_MIN_CAPABILITY = (8, 9)  # torchao's float8 matmuls (torch._scaled_mm): Ada and later
INT4_GROUP_SIZES = (32, 64, 128, 256)


def variant_names() -> list[str]:
    return [PREFIX + s for s in SCHEMES]


class TorchAoConfig(BackendConfig):
    dtype: DtypeName = Field("auto", description="of the modules left unquantized and of activations: the baseline's")
    group_size: int = Field(128, description="int4wo only: weights per scale (32, 64, 128 or 256)")

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int) -> int:
        if v not in INT4_GROUP_SIZES:
            raise ValueError(f"group_size must be one of {list(INT4_GROUP_SIZES)}, got {v}")
        return v


class TorchAoBackend(BackendBase):
    Config: ClassVar[type[BackendConfig]] = TorchAoConfig
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "torchao")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("torchao", "scheme"), ("group", "group_size"))
    # not fitted yet: the int8 constant (bitsandbytes' CPU path) until a demo run measures these
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 900_000_000, "cuda": 1_200_000_000}

    def __init__(self, name: str = "torchao-int8wo"):
        scheme = name.removeprefix(PREFIX)
        if not name.startswith(PREFIX) or scheme not in SCHEMES:
            raise KeyError(name)
        self.name, self.scheme = name, scheme
        self.bits, self.style, self.description = SCHEMES[scheme]

    @staticmethod
    def variant_names() -> list[str]:
        return variant_names()

    def rank(self) -> tuple:
        return (0, 5, -self.bits, self.name)  # after the bitsandbytes and GPTQ variants, before llama.cpp's

    def unavailable_reason(self, device: str) -> str | None:
        missing = missing_module("torchao", "pip install torchao")
        if missing:
            return missing
        if self.scheme == "int4wo" and device != "cuda":
            return ("torchao's int4 weight-only kernels need CUDA (torchao 0.18's Int4Tensor requires the "
                    "`mslk` CUDA library); on a CPU use gptq-4, nf4 or a gguf-q4 type")
        if self.scheme == "fp8":
            return _fp8_unavailable(device)
        return None

    def check_model(self, cfg: TorchAoConfig, model_config: dict[str, Any]) -> str | None:
        if self.scheme != "int4wo":
            return None
        misfit = group_size_misfit(cfg.group_size, model_config)  # torchao would silently leave such layers unquantized
        return f"torchao-int4wo: {misfit}" if misfit else None

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        if self.scheme == "int4wo":  # two weights a byte; a bf16 scale and zero point per group of each row
            group = int(options.get("group_size", 128))
            return sum(i * o // 2 + 2 * 2 * o * (i // group) for i, o in shape.all_linears()) + shape.unquantized_bytes(dtype_bytes)
        if self.scheme.startswith("fp8"):  # float8 values and a float32 scale per output row (Float8Tensor)
            return sum(i * o + 4 * o for i, o in shape.all_linears()) + shape.unquantized_bytes(dtype_bytes)
        # int8 values, a float32 scale and an int8 zero point per output row (Int8Tensor)
        return sum(i * o + 5 * o for i, o in shape.all_linears()) + shape.unquantized_bytes(dtype_bytes)

    def load(self, files: ModelFiles, cfg: TorchAoConfig, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        import torchao
        from torchao import quantization as q
        from transformers import TorchAoConfig as HFTorchAoConfig

        dtype = baseline_dtype(cfg.dtype, device)
        quant_type = {"int8wo": q.Int8WeightOnlyConfig, "w8a8": q.Int8DynamicActivationInt8WeightConfig,
                      "fp8wo": q.Float8WeightOnlyConfig,
                      "fp8": lambda: q.Float8DynamicActivationFloat8WeightConfig(granularity=q.PerRow())}.get(self.scheme)
        config = quant_type() if quant_type else q.Int4WeightOnlyConfig(group_size=cfg.group_size)
        model, tokenizer = load_causal_lm(files, resources, dtype, quantization_config=HFTorchAoConfig(quant_type=config))
        details = {"dtype": dtype, "bits": self.bits, "scheme": self.scheme, "method": self.description,
                   "config": type(config).__name__, "torchao": torchao.__version__}
        if self.scheme == "int4wo":
            details["group_size"] = cfg.group_size
        return Loaded(model, tokenizer, dtype, details)


def _fp8_unavailable(device: str) -> str | None:
    if device != "cuda":
        return ("FP8 W8A8 (torchao-fp8) needs a CUDA GPU of compute capability 8.9 or more (Ada, Hopper, "
                "Blackwell): a CPU has no float8 matmul; torchao-fp8wo keeps float8 weights on a CPU")
    import torch

    capability = torch.cuda.get_device_capability()
    if capability < FP8_MIN_CAPABILITY:
        return (f"FP8 W8A8 (torchao-fp8) needs compute capability 8.9 or more; "
                f"{torch.cuda.get_device_name()} is {capability[0]}.{capability[1]}")
    return None
