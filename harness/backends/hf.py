"""What the transformers-based backends share: the baseline dtype and the load call."""
from __future__ import annotations

import os
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
        **placement(device),
        trust_remote_code=files.trust_remote_code,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
    return model.eval(), tokenizer


def placement(device: str) -> dict[str, Any]:
    """device_map (and max_memory): the whole model on `device`, or, when an
    executor gave this cell several GPUs (EVALQ_GPUS, see executors.py), split
    over them by accelerate, each GPU holding at most EVALQ_MAX_MEMORY_PER_GPU
    bytes of weights."""
    gpus = int(os.environ.get("EVALQ_GPUS", "1"))
    if device != "cuda" or gpus <= 1:
        return {"device_map": device}
    per_gpu = os.environ.get("EVALQ_MAX_MEMORY_PER_GPU")
    return {"device_map": "auto", **({"max_memory": {i: int(per_gpu) for i in range(gpus)}} if per_gpu else {})}


def missing_module(module: str, install: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed ({install})"
    return None
