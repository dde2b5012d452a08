"""int8: bitsandbytes LLM.int8 (vector-wise int8 with fp16 outlier columns)."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from evalq.backends.base import BackendConfig, Loaded, ModelFiles
from evalq.backends.hf import DtypeName, baseline_dtype, load_causal_lm, missing_module


class Int8Config(BackendConfig):
    # 6.0 is LLM.int8's published threshold; the HF LLM-Perf leaderboard runs
    # with 0.0 (no outlier decomposition), which is faster and less accurate.
    threshold: float = Field(6.0, ge=0.0)
    dtype: DtypeName = "auto"  # dtype of the modules left unquantized: the baseline's
    skip_modules: list[str] | None = None


class Int8Backend:
    name: ClassVar[str] = "int8"
    Config: ClassVar[type[BackendConfig]] = Int8Config
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "bitsandbytes")

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("bitsandbytes", "pip install bitsandbytes")

    def check_model(self, cfg: Int8Config, model_config: dict[str, Any]) -> str | None:
        return None

    def load(self, files: ModelFiles, cfg: Int8Config, device: str, workdir: str) -> Loaded:
        from transformers import BitsAndBytesConfig

        # Without an explicit dtype the unquantized modules (embeddings, norms,
        # lm_head) stay float32 and the "quantized" model can outweigh the baseline.
        dtype = baseline_dtype(cfg.dtype, device)
        qcfg = BitsAndBytesConfig(
            load_in_8bit=True,
            llm_int8_threshold=cfg.threshold,
            llm_int8_skip_modules=cfg.skip_modules,
        )
        model, tokenizer = load_causal_lm(files, device, dtype, quantization_config=qcfg)
        return Loaded(model, tokenizer, dtype, {"dtype": dtype, "bits": 8, "threshold": cfg.threshold})
