"""What the transformers-based backends share: the baseline dtype and the load call."""
from __future__ import annotations

from typing import Any, Literal

from evalq.backends.base import ModelFiles
from evalq.cpu import auto_cpu_dtype
from evalq.resources import Resources

DtypeName = Literal["auto", "float16", "bfloat16", "float32"]


# Options of the transformers backends that take a DtypeName.
DTYPE_OPTIONS = ("dtype", "compute_dtype")


def baseline_dtype(requested: str, device: str) -> str:
    """The baseline dtype: float16 on CUDA; on the CPU bfloat16 where the CPU
    computes it natively, else float32 (evalq.cpu: emulated bf16 is ~7x slower)."""
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else auto_cpu_dtype()


def resolve_auto_dtypes(options: dict[str, Any], device: str) -> dict[str, Any]:
    """A CPU cell's `auto` dtypes resolved where the matrix is expanded, so the
    cell's key says which dtype runs (bf16 on one machine, float32 on another
    are different cells) and a worker elsewhere runs what the key says."""
    if device != "cpu":
        return options
    return {k: baseline_dtype(v, device) if k in DTYPE_OPTIONS and v == "auto" else v for k, v in options.items()}


def load_causal_lm(files: ModelFiles, resources: Resources, dtype: str, **kwargs: Any):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        files.path,
        dtype=getattr(torch, dtype),
        **placement(resources),
        trust_remote_code=files.trust_remote_code,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(files.path, trust_remote_code=files.trust_remote_code)
    return model.eval(), tokenizer


def placement(resources: Resources) -> dict[str, Any]:
    """device_map (and max_memory): the whole model on the cell's device, or, when an
    executor gave this cell several GPUs (Resources.gpus, see executors.py), split
    over them by accelerate, each GPU holding at most Resources.max_memory_per_gpu
    bytes of weights."""
    if resources.device != "cuda" or resources.gpus <= 1:
        return {"device_map": resources.device}
    per_gpu = resources.max_memory_per_gpu
    return {"device_map": "auto", **({"max_memory": {i: per_gpu for i in range(resources.gpus)}} if per_gpu else {})}


def missing_module(module: str, install: str) -> str | None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed ({install})"
    return None


def linear_in_features(model_config: dict[str, Any]) -> dict[str, int]:
    """in_features of the transformer's linear layers, from config.json alone."""
    cfg = model_config.get("text_config", model_config)
    hidden = cfg.get("hidden_size")
    heads = cfg.get("num_attention_heads")
    head_dim = cfg.get("head_dim") or (hidden // heads if hidden and heads else None)
    found = {
        "hidden_size (q/k/v/gate/up_proj)": hidden,
        "intermediate_size (down_proj)": cfg.get("intermediate_size"),
        "num_attention_heads*head_dim (o_proj)": heads * head_dim if heads and head_dim else None,
    }
    return {k: v for k, v in found.items() if isinstance(v, int)}


def group_size_misfit(group_size: int, model_config: dict[str, Any]) -> str | None:
    """"group_size G does not divide <layer> = <in_features>, …" when grouped quantization
    cannot split some linear layer's in_features into whole groups, else None."""
    bad = {k: v for k, v in linear_in_features(model_config).items() if v % group_size}
    if not bad:
        return None
    return f"group_size {group_size} does not divide " + ", ".join(f"{k} = {v}" for k, v in bad.items())
