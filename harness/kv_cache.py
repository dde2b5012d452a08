"""KV-cache types: which each runtime offers, and the bytes each holds.

Names are the runtime's own. llama.cpp (the gguf-* variants): its
`--cache-type-k/-v` values, set as the context's `type_k`/`type_v`.
transformers (every other variant): its quantized cache, with the HQQ backend
at 8, 4 or 2 bits (groups of 64 along the channel, the newest tokens kept
unquantized until 128 of them are due) or per-tensor FP8 (e4m3, scale frozen at
the first update). `f16` in both is the unquantized cache: float16 in llama.cpp,
the model's compute dtype in transformers (float32 on a CPU without native
bf16, as the fp16 variant's label already means).
"""
from __future__ import annotations

from typing import Any

from evalq.architecture import PlanError, Shape

UNQUANTIZED = "f16"
# llama.cpp's allowed cache types (common/arg.cpp's kv_cache_types)
LLAMA_CPP_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")
# name → (transformers' QuantizedCache backend, nbits); None: the plain DynamicCache
TRANSFORMERS_TYPES: dict[str, tuple[str, int | None] | None] = {
    "f16": None, "hqq-8": ("hqq", 8), "hqq-4": ("hqq", 4), "hqq-2": ("hqq", 2), "fp8": ("fp8", None)}
RUNTIMES: dict[str, tuple[str, ...]] = {"llama.cpp": LLAMA_CPP_TYPES, "transformers": tuple(TRANSFORMERS_TYPES)}
HQQ_GROUP = 64  # transformers' q_group_size default
RESIDUAL = 128  # transformers' residual_length default


def runtime_lacks(runtime: str, kv_type: str) -> str | None:
    """Why `runtime` cannot hold a cache of `kv_type` (None when it can)."""
    types = RUNTIMES[runtime]
    if kv_type in types:
        return None
    return f"{_owner(runtime)} KV cache has no type {kv_type!r} (its types: {', '.join(types)})"


def _owner(runtime: str) -> str:
    return runtime + ("'" if runtime.endswith("s") else "'s")


def unknown_types(kv_types: list[str], runtimes: set[str]) -> list[tuple[int, str]]:
    """(index, message) of each type no runtime of the matrix offers."""
    out = []
    for i, kv_type in enumerate(kv_types):
        if not any(kv_type in RUNTIMES[r] for r in runtimes):
            known = "; ".join(f"{r}: {', '.join(RUNTIMES[r])}" for r in sorted(runtimes))
            out.append((i, f"no variant of this matrix has a KV-cache type {kv_type!r} ({known})"))
    return out


def row_elements(shape: Shape) -> int:
    """Elements one token adds to one layer's K (and as many to its V)."""
    return shape.kv_heads * shape.head_dim


def llama_cpp_bytes(kv_type: str, shape: Shape, tokens: int) -> int:
    """The K and V rows of `tokens` tokens in every layer: ggml's row size of the type."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kv_type.upper()]]
    n = row_elements(shape)
    if n % block:
        raise PlanError(f"a KV row of {n} values is not a whole number of {kv_type}'s blocks of {block}")
    return 2 * shape.layers * tokens * (n // block) * size


def quantized_split(prefill: int, chunk: int, total: int, residual: int = RESIDUAL) -> tuple[int, int]:
    """(quantized, unquantized) tokens in transformers' quantized cache after a prefill of
    `prefill` tokens and the rest fed `chunk` at a time: the prefill is quantized whole;
    later tokens wait in the residual until it would reach `residual`, then everything is
    quantized again."""
    quantized, waiting, pos = prefill, 0, prefill
    while pos < total:
        n = min(chunk, total - pos)
        if waiting + n >= residual:
            quantized, waiting = quantized + waiting + n, 0
        else:
            waiting += n
        pos += n
    return quantized, waiting


def transformers_bytes(kv_type: str, shape: Shape, prefill: int, chunk: int, total: int, dtype_bytes: int) -> int:
    n, tensors = row_elements(shape), 2 * shape.layers
    spec = TRANSFORMERS_TYPES[kv_type]
    if spec is None:
        return tensors * total * n * dtype_bytes
    backend, bits = spec
    if backend == "fp8":
        return tensors * (total * n + 4)  # one float32 scale per tensor
    quantized, waiting = quantized_split(prefill, chunk, total)
    values = quantized * n
    # packed values, a scale and a zero point per group in the compute dtype, the residual unquantized
    return tensors * (values * bits // 8 + 2 * (values // HQQ_GROUP) * dtype_bytes + waiting * n * dtype_bytes)


def predicted_bytes(runtime: str, kv_type: str, shape: Shape, prefill: int, chunk: int, total: int,
                    dtype_bytes: int) -> int:
    """The cache's bytes after the long-context measurement's schedule (`prefill` tokens,
    then `chunk` at a time up to `total`)."""
    if runtime == "llama.cpp":
        return llama_cpp_bytes(kv_type, shape, total)
    return transformers_bytes(kv_type, shape, prefill, chunk, total, dtype_bytes)


def tensor_bytes(x: Any) -> int:
    """Bytes of the tensors in x (a tensor, or tuples, lists and dicts of them)."""
    if hasattr(x, "untyped_storage"):
        return x.numel() * x.element_size()
    if isinstance(x, (list, tuple)):
        return sum(tensor_bytes(y) for y in x)
    if isinstance(x, dict):
        return sum(tensor_bytes(y) for y in x.values())
    return 0


def transformers_cache_bytes(cache: Any) -> int:
    """What a transformers cache holds: every layer's unquantized keys and values and its
    quantized ones with their scales and zero points."""
    names = ("keys", "values", "_quantized_keys", "_quantized_values")
    return sum(tensor_bytes(getattr(layer, name, None)) for layer in cache.layers for name in names)
