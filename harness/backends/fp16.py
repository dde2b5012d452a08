"""fp16: the 16-bit baseline every quantized variant is compared against."""
from __future__ import annotations

from typing import Any, ClassVar

from evalq.backends.base import BackendConfig, Loaded, ModelFiles
from evalq.backends.hf import DtypeName, baseline_dtype, load_causal_lm


class FP16Config(BackendConfig):
    dtype: DtypeName = "auto"  # auto: float16 on CUDA, bfloat16 on CPU


class FP16Backend:
    name: ClassVar[str] = "fp16"
    Config: ClassVar[type[BackendConfig]] = FP16Config
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")

    def unavailable_reason(self, device: str) -> str | None:
        return None

    def check_model(self, cfg: FP16Config, model_config: dict[str, Any]) -> str | None:
        return None

    def load(self, files: ModelFiles, cfg: FP16Config, device: str, workdir: str) -> Loaded:
        dtype = baseline_dtype(cfg.dtype, device)
        model, tokenizer = load_causal_lm(files, device, dtype)
        return Loaded(model, tokenizer, dtype, {"dtype": dtype, "bits": 16 if dtype != "float32" else 32})
