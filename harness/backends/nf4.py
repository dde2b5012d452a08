"""nf4: bitsandbytes 4-bit NormalFloat, double quantization on by default."""
from __future__ import annotations

from typing import Any, ClassVar

from evalq.backends.base import BackendConfig, Loaded, ModelFiles
from evalq.backends.hf import DtypeName, baseline_dtype, load_causal_lm, missing_module


class NF4Config(BackendConfig):
    double_quant: bool = True
    compute_dtype: DtypeName = "auto"  # auto: the baseline dtype
    dtype: DtypeName = "auto"  # dtype of the modules left unquantized: the baseline's


class NF4Backend:
    name: ClassVar[str] = "nf4"
    Config: ClassVar[type[BackendConfig]] = NF4Config
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers", "bitsandbytes")

    def unavailable_reason(self, device: str) -> str | None:
        return missing_module("bitsandbytes", "pip install bitsandbytes")

    def check_model(self, cfg: NF4Config, model_config: dict[str, Any]) -> str | None:
        return None

    def load(self, files: ModelFiles, cfg: NF4Config, device: str, workdir: str) -> Loaded:
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
        model, tokenizer = load_causal_lm(files, device, dtype, quantization_config=qcfg)
        details = {"dtype": dtype, "bits": 4, "double_quant": cfg.double_quant, "compute_dtype": compute, "block_size": 64}
        return Loaded(model, tokenizer, dtype, details)
