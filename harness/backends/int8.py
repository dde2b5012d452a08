"""int8: bitsandbytes LLM.int8 (vector-wise int8 with fp16 outlier columns)."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from evalq.backends.base import BackendBase, BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.hf import DtypeName, baseline_dtype, load_causal_lm, missing_module


class Int8Config(BackendConfig):
    # 6.0 is LLM.int8's published threshold; the HF LLM-Perf leaderboard runs
    # with 0.0 (no outlier decomposition), which is faster and less accurate.
    threshold: float = Field(6.0, ge=0.0, description="LLM.int8's outlier threshold: activations above it stay 16-bit (HF's LLM-Perf leaderboard uses 0.0)")
    dtype: DtypeName = Field("auto", description="dtype of the modules left unquantized: the baseline's")
    skip_modules: list[str] | None = Field(None, description="modules left unquantized (default: bitsandbytes' own, the output layer)")


class Int8Backend(BackendBase):
    name: ClassVar[str] = "int8"
    Config: ClassVar[type[BackendConfig]] = Int8Config
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "bitsandbytes")
    rank_key: ClassVar[tuple] = (0, 1)
    style: ClassVar[tuple[str, str]] = ("#ff7f0e", "square")
    detail_fields: ClassVar[tuple[tuple[str, str], ...]] = (("threshold", "threshold"),)
    overhead_bytes: ClassVar[dict[str, int]] = {"cpu": 900_000_000, "cuda": 1_200_000_000}
    # bitsandbytes' CPU int8 path in float32 is erratic (SmolLM2-135M, AVX2-only CPU, 2026-12-02):
    # 1,513,582,592, 1,497,079,808 and 1,871,937,536 B in three runs where the bf16 constant predicted 1,155,321,088
    cpu_float32_overhead_bytes: ClassVar[int | None] = 1_345_000_000

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("bitsandbytes", "pip install bitsandbytes")

    def weights_bytes(self, shape: Any, options: dict[str, Any], dtype_bytes: int) -> int:
        # int8 weights + one float32 scale per output row (SCB)
        return sum(i * o + 4 * o for i, o in shape.all_linears()) + shape.unquantized_bytes(dtype_bytes)

    def load(self, files: ModelFiles, cfg: Int8Config, resources: Resources, workdir: str) -> Loaded:
        device = resources.device
        from transformers import BitsAndBytesConfig

        # Without an explicit dtype the unquantized modules (embeddings, norms,
        # lm_head) stay float32 and the "quantized" model can outweigh the baseline.
        dtype = baseline_dtype(cfg.dtype, device)
        qcfg = BitsAndBytesConfig(
            load_in_8bit=True,
            llm_int8_threshold=cfg.threshold,
            llm_int8_skip_modules=cfg.skip_modules,
        )
        model, tokenizer = load_causal_lm(files, resources, dtype, quantization_config=qcfg)
        return Loaded(model, tokenizer, dtype, {"dtype": dtype, "bits": 8, "threshold": cfg.threshold})
