"""fp16: the 16-bit baseline every quantized variant is compared against."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.hf import DtypeName, baseline_dtype, load_causal_lm


class FP16Config(BackendConfig):
    dtype: DtypeName = Field("auto", description="auto: float16 on CUDA, bfloat16 on CPU")


class FP16Backend(BackendBase):
    name: ClassVar[str] = "fp16"
    Config: ClassVar[type[BackendConfig]] = FP16Config
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    rank_key: ClassVar[tuple] = (0, 0)
    style: ClassVar[tuple[str, str]] = ("#1f77b4", "circle")
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 630_000_000, "cuda": 1_000_000_000}

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        return shape.linear_params * dtype_bytes + shape.unquantized_bytes(dtype_bytes)

    def load(self, files: ModelFiles, cfg: FP16Config, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        dtype = baseline_dtype(cfg.dtype, device)
        model, tokenizer = load_causal_lm(files, resources, dtype)
        return Loaded(model, tokenizer, dtype, {"dtype": dtype, "bits": 16 if dtype != "float32" else 32})
