"""What the transformers-based backends share: the baseline dtype and the load call."""
from __future__ import annotations

from typing import Any, Literal

from evalq.backends.base import ModelFiles

DtypeName = Literal["auto", "float16", "bfloat16", "float32"]


def baseline_dtype(requested: str, device: str) -> str:
    """The 16-bit baseline: float16 on CUDA, bfloat16 on CPU (CPU float16 matmuls are slow or missing)."""
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "bfloat16"


def load_causal_lm(files: ModelFiles, device: str, dtype: str, **kwargs: Any):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        files.path,
        dtype=getattr(torch, dtype),
        device_map=device,
        trust_remote_code=files.trust_remote_code,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
    return model.eval(), tokenizer


def missing_module(module: str, install: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed ({install})"
    return None
