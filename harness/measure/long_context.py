"""Quality at long context under each KV-cache type (the matrix's `long_context`).

The text's first windows × context tokens (BOS first where the tokenizer adds
one, as in the quality slice) are cut into windows, and each window's last
`scored` tokens are scored. The tokens before them go in one pass, the scored
ones `chunk` at a time, so every scored token reads the keys and values the
cache kept, quantized or not: in a single pass attention would use the fresh,
unquantized keys and hide what the cache does. The baseline is the fp16
weights with the unquantized transformers cache on the same schedule; each
variant's cache types are compared with it (KLD, same-top-1, PPL), and the
cache's bytes after the last window are measured beside the planner's figure.
"""
from __future__ import annotations

import time
from typing import Any

from evalq.kv_cache import predicted_bytes, runtime_lacks
from evalq.measure.quality import (Baseline, QualityError, Slice, Windows, against_baseline, bos_token, model_length,
                                   read_text, slice_tokens, write_baseline)
from evalq.measure.torch_model import measured

FIGURES = ("n_tokens", "kld_mean", "kld_stderr", "same_top1", "same_top1_stderr", "ppl_base", "ppl", "ppl_ratio",
           "ln_ppl_ratio_stderr")


def length_problem(settings: Any, model_config: dict[str, Any]) -> str | None:
    """The window against the model's length, from config.json alone (preflight asks before anything runs)."""
    length = model_length(model_config)
    if length and settings.context > length:
        return f"context {settings.context} is longer than the model's {length} positions"
    return None


def prepare_long_slice(tokenizer: Any, settings: Any, model_config: dict[str, Any]) -> Slice:
    problem = length_problem(settings, model_config)
    if problem:
        raise QualityError(f"long_context.{problem}")
    bos = bos_token(tokenizer)
    n = settings.context * settings.windows
    ids = slice_tokens(tokenizer, read_text(settings), n - (bos is not None))
    if bos is not None:
        ids = [bos] + ids
    starts = tuple(range(0, n, settings.context))
    first = settings.context - 1 - settings.scored
    return Slice(ids, Windows("long-context", settings.context, settings.context, first, starts, bos))


class CachedLogits:
    """quality's `logits_of` through a KV cache of one type; keeps the cache's bytes after the last window."""

    def __init__(self, chunk: int, kv_type: str):
        self.chunk, self.kv_type = chunk, kv_type
        self.kv_bytes: int | None = None

    def __call__(self, model: Any, window: list[int], first_scored: int) -> Any:
        logits, self.kv_bytes = measured(model).cached_logits(window, first_scored, self.chunk, self.kv_type)
        return logits


def write_long_baseline(out: Any, model: Any, sl: Slice, model_name: str, settings: Any) -> None:
    write_baseline(out, model, sl, model_name, CachedLogits(settings.chunk, "f16"))


def measure_kv_types(model: Any, runtime: str, sl: Slice, baseline: Baseline, settings: Any, shape: Any,
                     dtype_bytes: int) -> dict[str, Any]:
    """Every cache type of the matrix on this variant, against the baseline: figures, or why not."""
    out: dict[str, Any] = {"runtime": runtime, "context": settings.context, "scored": settings.scored,
                           "windows": settings.windows, "chunk": settings.chunk, "types": {}}
    for kv_type in settings.kv_cache:
        lacks = runtime_lacks(runtime, kv_type)
        if lacks:
            out["types"][kv_type] = {"status": "unsupported", "reason": lacks}
            continue
        logits_of = CachedLogits(settings.chunk, kv_type)
        started = time.perf_counter()
        try:
            summary = against_baseline(model, sl, baseline, logits_of)
        except QualityError:
            raise
        except (ImportError, ValueError) as exc:  # e.g. transformers' quantized cache on sliding-window layers
            out["types"][kv_type] = {"status": "unsupported", "reason": f"{exc.__class__.__name__}: {exc}"}
            continue
        record = {"status": "ok", **{k: summary[k] for k in FIGURES}, "kv_bytes": logits_of.kv_bytes,
                  "seconds": time.perf_counter() - started}
        if shape is not None:
            record["kv_bytes_predicted"] = predicted_bytes(runtime, kv_type, shape, sl.windows.first_scored,
                                                           settings.chunk, settings.context, dtype_bytes)
        out["types"][kv_type] = record
    return out
