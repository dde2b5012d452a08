"""Token-level quality of a variant against its model's fp16 baseline.

On a fixed slice of text, each variant's next-token distributions are compared
with the baseline's: perplexity of both, KL divergence, same top-1 token, and
Δp (change of the probability given to the correct token).

The baseline is computed once per model and kept on disk as the logits the
baseline produced, in their own 16-bit dtype, for the scored positions only:
nothing is lost (KLD from the stored logits equals KLD from the live ones) and
the size is bounded by scored tokens × vocabulary × 2 bytes (4 for a float32
baseline), plus 4 bytes per scored token for the targets and 4 per token of
the slice for its ids.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from evalq.backends.base import ROW_CHUNK
from evalq.measure.torch_model import measured

LLAMA_CPP_CONTEXT = 512
KLD_PERCENTILES = (50, 90, 95, 99, 99.9)
DP_PERCENTILES = (0.1, 1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)


class QualityError(ValueError):
    """The text slice, the windows or the baseline do not fit this cell."""


@dataclass(frozen=True)
class Windows:
    """Where the slice is cut into forward passes and which predictions count.

    Window i covers tokens [starts[i], starts[i] + context); its logits at
    positions first_scored .. context-2 predict tokens first_scored+1 ..
    context-1 of the window, and those are scored."""

    convention: str
    context: int
    stride: int
    first_scored: int
    starts: tuple[int, ...]
    bos: int | None  # replaces each window's first token, as llama-perplexity does

    @property
    def scored_per_window(self) -> int:
        return self.context - 1 - self.first_scored

    @property
    def n_scored(self) -> int:
        return self.scored_per_window * len(self.starts)


def plan_windows(n_tokens: int, convention: str, context: int | None, stride: int | None,
                 model_length: int | None, bos: int | None) -> Windows:
    if context is None:
        if convention == "llama.cpp":
            context = LLAMA_CPP_CONTEXT
        elif model_length:
            context = model_length
        else:
            raise QualityError("the model's config has no max_position_embeddings: set quality.context")
    if model_length and context > model_length:
        raise QualityError(f"quality window {context} is longer than the model's {model_length} positions")
    stride = stride or context
    if stride > context:
        raise QualityError(f"stride {stride} is larger than the window ({context}): tokens would be skipped")
    if n_tokens < context:
        raise QualityError(f"the quality slice has {n_tokens} tokens, fewer than one window of {context}: "
                           f"raise quality.tokens or lower quality.context")
    # llama.cpp scores only the second half: every scored token sees at least context/2 tokens
    first = context // 2 if convention == "llama.cpp" else 0
    first = max(first, context - 1 - stride)  # overlapping windows score only what is new
    starts = tuple(range(0, n_tokens - context + 1, stride))
    return Windows(convention, context, stride, first, starts, bos)


def read_text(settings: Any) -> str:
    if settings.path:
        return Path(settings.path).read_text(encoding="utf-8")
    from datasets import load_dataset

    rows = load_dataset(settings.dataset, settings.config, split=settings.split)[settings.column]
    return "\n\n".join(rows)  # as the GPTQ paper's evaluation joins WikiText-2


def slice_tokens(tokenizer: Any, text: str, n: int) -> list[int]:
    """The first n tokens of the text (tokenizing a generous prefix first: the whole
    WikiText-2 test split is 1.2 MB). Text that spells a special token is plain text,
    as llama-perplexity reads it: WikiText's "<unk>" is Gemma's unknown-token id
    to a transformers tokenizer by default, six ordinary tokens to llama.cpp."""
    def tokenize(part: str) -> list[int]:
        return tokenizer(part, add_special_tokens=False, split_special_tokens=True).input_ids

    prefix = text[: n * 16]
    ids = tokenize(prefix)
    if len(ids) < n + 64 and len(prefix) < len(text):
        ids = tokenize(text)
    if len(ids) < n:
        raise QualityError(f"the quality text has {len(ids)} tokens, fewer than quality.tokens = {n}")
    return ids[:n]


def bos_token(tokenizer: Any) -> int | None:
    """The BOS id when the tokenizer puts one in front of a text (Gemma, Llama), else None."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return bos if ids and ids[0] == bos else None


def model_length(model_config: dict[str, Any]) -> int | None:
    cfg = model_config.get("text_config", model_config)
    value = cfg.get("max_position_embeddings")
    return value if isinstance(value, int) else None


def tokens_sha(ids: list[int]) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()


@dataclass(frozen=True)
class Slice:
    ids: list[int]
    windows: Windows

    def batches(self) -> Iterator[tuple[list[int], np.ndarray]]:
        """(input ids, scored target ids) of each window."""
        w = self.windows
        for start in w.starts:
            window = list(self.ids[start : start + w.context])
            if w.bos is not None:
                window[0] = w.bos
            yield window, np.asarray(window[w.first_scored + 1 :], dtype=np.int64)


def prepare_slice(tokenizer: Any, cell: Any, model_config: dict[str, Any]) -> Slice:
    """llama-perplexity's token stream: the text tokenized with BOS first where the
    tokenizer adds one (Gemma, Llama; SmolLM2 does not), then cut into windows whose
    first token is BOS again. So window i holds the stream's tokens from i × stride,
    with BOS in front, exactly as llama.cpp scores them."""
    q = cell.quality
    bos = bos_token(tokenizer)
    ids = slice_tokens(tokenizer, read_text(q), q.tokens - (bos is not None))
    if bos is not None:
        ids = [bos] + ids
    windows = plan_windows(len(ids), q.convention, q.context, q.stride, model_length(model_config), bos)
    return Slice(ids, windows)


def window_logits(model: Any, window: list[int], first_scored: int) -> Any:
    """Logits of the scored positions of one window, in the model's own dtype."""
    return measured(model).window_logits(window, first_scored)


# --- the baseline on disk --------------------------------------------------

STORED_DTYPES = {"bfloat16": "<u2", "float16": "<f2", "float32": "<f4"}  # numpy has no bfloat16: keep its bits


def baseline_key(cell: Any, files: Any, long_context: bool = False) -> str:
    """The baseline's content key: of the quality slice, or of the long-context one
    (whose cache types are the variants', not the baseline's)."""
    payload = {
        # 3: ids.npy (int32) kept beside the logits; 4: BOS first in the stream and special
        # tokens' spellings as plain text, as llama-perplexity
        "format": 4,
        "model": files.revision,
        "quality": (cell.long_context.model_dump(mode="json", exclude={"kv_cache"}) if long_context
                    else cell.quality.model_dump(mode="json")),
        "text": cell.long_context_text_sha256 if long_context else cell.quality_text_sha256,
        "baseline": cell.baseline_options,
        "device": cell.device,
        # bfloat16 logits move with the CPU's kernels and the threads that split each matmul: a
        # baseline reused from another machine or thread count left the fp16 cell a KLD of 1e-3 to itself
        "hardware": cell.hardware,
        "threads": cell.threads("quality"),
        "torch": version("torch"),
        "transformers": version("transformers"),
    }
    if long_context:
        payload["kind"] = "long_context"
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def write_baseline(out: Path, model: Any, sl: Slice, model_name: str, logits_of: Callable = window_logits) -> None:
    """Write the scored logits of every window to out/logits.npy (memory-mapped, one window at a time);
    `logits_of(model, window, first_scored)` as window_logits."""
    import torch

    w = sl.windows
    first = None
    targets = np.empty(w.n_scored, dtype=np.int32)
    rows = w.scored_per_window
    for i, (window, target) in enumerate(sl.batches()):
        logits = logits_of(model, window, w.first_scored)
        dtype = str(logits.dtype).removeprefix("torch.")
        if first is None:
            if dtype not in STORED_DTYPES:
                logits, dtype = logits.float(), "float32"
            first = (dtype, logits.shape[-1])
            store = np.lib.format.open_memmap(out / "logits.npy", mode="w+", dtype=STORED_DTYPES[dtype],
                                              shape=(w.n_scored, first[1]))
        elif dtype != first[0]:
            logits = logits.to(getattr(torch, first[0]))
        raw = logits.cpu().contiguous()
        store[i * rows : (i + 1) * rows] = (raw.view(torch.int16) if first[0] == "bfloat16" else raw).numpy().view(STORED_DTYPES[first[0]])
        targets[i * rows : (i + 1) * rows] = target
    store.flush()
    del store
    np.save(out / "targets.npy", targets)
    np.save(out / "ids.npy", np.asarray(sl.ids, dtype=np.int32))  # to point at the first token a variant cuts differently
    meta = {"model": model_name, "dtype": first[0], "vocab": first[1], "n_scored": w.n_scored, "n_tokens": len(sl.ids),
            "windows": asdict(w), "tokens_sha256": tokens_sha(sl.ids)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


@dataclass
class Baseline:
    path: Path
    meta: dict[str, Any]
    logits: np.ndarray  # memory-mapped raw 16-bit (or float32) values
    targets: np.ndarray

    @classmethod
    def open(cls, path: Path) -> Baseline:
        meta = json.loads((path / "meta.json").read_text())
        return cls(path, meta, np.load(path / "logits.npy", mmap_mode="r"), np.load(path / "targets.npy"))

    def rows(self, lo: int, hi: int) -> Any:
        import torch

        raw = torch.from_numpy(np.array(self.logits[lo:hi]))  # a writable copy of the memory-mapped rows
        if self.meta["dtype"] == "bfloat16":
            return raw.view(torch.bfloat16)
        return raw

    @property
    def ids(self) -> list[int] | None:
        """The slice's token ids (baselines written before they were kept: None)."""
        path = self.path / "ids.npy"
        return np.load(path).tolist() if path.exists() else None

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir())


# --- comparison --------------------------------------------------------------

def token_stats(base_logits: Any, logits: Any, targets: Any) -> dict[str, np.ndarray]:
    """Per-token KLD(base‖variant), same top-1, and the log-probabilities of the
    correct token under both, in float64 (rows processed in chunks)."""
    import torch

    out: dict[str, list] = {"kld": [], "same_top1": [], "base_logp": [], "logp": []}
    targets = torch.as_tensor(targets, dtype=torch.long)
    for lo in range(0, base_logits.shape[0], ROW_CHUNK):
        p = torch.log_softmax(base_logits[lo : lo + ROW_CHUNK].double(), dim=-1)
        q = torch.log_softmax(logits[lo : lo + ROW_CHUNK].double(), dim=-1)
        t = targets[lo : lo + ROW_CHUNK, None]
        out["kld"].append((p.exp() * (p - q)).sum(-1).clamp_min(0).numpy())  # ≥ 0; rounding can give -1e-17
        out["same_top1"].append((p.argmax(-1) == q.argmax(-1)).numpy())
        out["base_logp"].append(p.gather(-1, t)[:, 0].numpy())
        out["logp"].append(q.gather(-1, t)[:, 0].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_tokens(baseline: Baseline, ids: list[int]) -> None:
    """The variant must cut the quality text into the very tokens the baseline
    did (a GGUF carries its own tokenizer): otherwise its distributions are
    over other positions, and comparing them would be wrong, not just noisy."""
    if baseline.meta["tokens_sha256"] == tokens_sha(ids):
        return
    msg = (f"this variant's tokenizer cuts the quality text differently from the baseline's "
           f"({len(ids)} tokens here, {baseline.meta.get('n_tokens', '?')} in the baseline)")
    base_ids = baseline.ids
    if base_ids is not None:
        at = first_difference(base_ids, ids)
        if at is not None:
            differ = sum(x != y for x, y in zip(base_ids, ids))
            msg += (f": first difference at token {at} (baseline id {base_ids[at] if at < len(base_ids) else 'none'}, "
                    f"here {ids[at] if at < len(ids) else 'none'}); {differ} of the first "
                    f"{min(len(ids), len(base_ids))} positions differ")
    raise QualityError(msg + ". The distributions cannot be compared token for token.")


def against_baseline(model: Any, sl: Slice, baseline: Baseline, logits_of: Callable = window_logits) -> dict[str, Any]:
    """Run the variant over the slice and summarize it against the stored baseline
    (`logits_of` as in write_baseline)."""
    base_bos = baseline.meta["windows"].get("bos")
    if base_bos != sl.windows.bos:
        def said(bos: int | None) -> str:
            return f"puts BOS (id {bos}) first" if bos is not None else "adds no BOS"

        raise QualityError(f"this variant's tokenizer {said(sl.windows.bos)}, the baseline's {said(base_bos)}: "
                           f"their windows hold other tokens, and the distributions cannot be compared token for token.")
    check_tokens(baseline, sl.ids)
    w = sl.windows
    if baseline.meta["windows"]["starts"] != list(w.starts) or baseline.meta["windows"]["first_scored"] != w.first_scored:
        raise QualityError("the baseline was computed with other windows")
    rows = w.scored_per_window
    parts = []
    for i, (window, target) in enumerate(sl.batches()):
        logits = logits_of(model, window, w.first_scored).cpu()
        if logits.shape[-1] != baseline.meta["vocab"]:
            raise QualityError(f"vocabulary of {logits.shape[-1]} logits, the baseline has {baseline.meta['vocab']}")
        if not np.array_equal(baseline.targets[i * rows : (i + 1) * rows], target):
            raise QualityError("the baseline's targets differ from this slice's")
        parts.append(token_stats(baseline.rows(i * rows, (i + 1) * rows), logits, target))
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    summary = summarize(**stats)
    summary.update(tokens_checked=len(sl.ids), tokens_sha256=tokens_sha(sl.ids),  # identical to the baseline's
                   convention=w.convention, context=w.context, stride=w.stride, windows=len(w.starts),
                   baseline_bytes=baseline.nbytes, baseline_dtype=baseline.meta["dtype"], baseline=baseline.path.name)
    return summary


def _percentiles(x: np.ndarray, qs: tuple[float, ...]) -> dict[str, float]:
    values = np.percentile(x, qs)
    return {f"p{q:g}": float(v) for q, v in zip(qs, values)}


def summarize(kld: np.ndarray, same_top1: np.ndarray, base_logp: np.ndarray, logp: np.ndarray) -> dict[str, Any]:
    """The figures llama.cpp's --kl-divergence prints, from per-token values."""
    n = len(kld)
    dp = np.exp(logp) - np.exp(base_logp)
    diff = base_logp - logp  # per-token log(PPL ratio) contributions
    same = float(np.mean(same_top1))
    dp_std = float(np.std(dp))
    return {
        "n_tokens": n,
        "ppl_base": math.exp(-float(np.mean(base_logp))),
        "ppl": math.exp(-float(np.mean(logp))),
        "ppl_ratio": math.exp(float(np.mean(diff))),
        "nll_stderr": float(np.std(logp, ddof=1) / math.sqrt(n)) if n > 1 else None,  # of ln ppl
        "ln_ppl_ratio": float(np.mean(diff)),
        "ln_ppl_ratio_stderr": float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else None,
        "kld_mean": float(np.mean(kld)),
        "kld_stderr": float(np.std(kld, ddof=1) / math.sqrt(n)) if n > 1 else None,
        "kld": {**_percentiles(kld, KLD_PERCENTILES), "max": float(np.max(kld))},
        "same_top1": same,
        "same_top1_stderr": math.sqrt(same * (1 - same) / n),
        "dp_mean": float(np.mean(dp)),
        "dp_rms": float(np.sqrt(np.mean(dp**2))),
        # negative skew: a long tail of tokens whose correct answer lost probability
        "dp_skew": float(np.mean((dp - dp.mean()) ** 3) / dp_std**3) if dp_std > 0 else 0.0,
        "dp": {"min": float(np.min(dp)), **_percentiles(dp, DP_PERCENTILES), "max": float(np.max(dp))},
    }


def ngram_overlap(windows: list[list[int]], ids: list[int], n: int = 32) -> float:
    """Fraction of the calibration windows sharing at least one n-token run with the evaluation slice."""
    if len(ids) < n:
        return 0.0
    seen = {tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)}
    hits = sum(any(tuple(w[i : i + n]) in seen for i in range(len(w) - n + 1)) for w in windows)
    return hits / len(windows) if windows else 0.0


# --- the noise floor of the arithmetic ----------------------------------------

def floor_dtype(current: str, device: str, native_bf16: bool) -> tuple[str | None, str | None]:
    """The other dtype the baseline's own weights run in to measure the floor: float32
    against a 16-bit baseline, else bfloat16 where it is native; (None, why) where not."""
    if current in ("bfloat16", "float16"):
        return "float32", None
    if device == "cuda" or native_bf16:
        return "bfloat16", None
    return None, ("bfloat16 is emulated on this CPU (no AVX512_BF16/AMX), several times slower than the float32 "
                  "baseline's own pass: not measured")


def noise_floor(model: Any, sl: Slice, baseline: Baseline, device: str) -> dict[str, Any]:
    """KLD and same-top-1 of the baseline's own weights computed in another dtype
    against the stored baseline: how far two faithful computations of the same
    model already differ, the floor a quantized variant's figures sit on."""
    import torch

    from evalq.cpu import native_bf16

    current = baseline.meta["dtype"]
    other, why = floor_dtype(current, device, device != "cuda" and native_bf16())
    if other is None:
        return {"against": current, "skipped": why}
    model.to(getattr(torch, other))
    try:
        s = against_baseline(model, sl, baseline)
    finally:
        model.to(getattr(torch, current))
    return {"dtype": other, "against": current, "n_tokens": s["n_tokens"], "kld_mean": s["kld_mean"],
            "kld_stderr": s["kld_stderr"], "kld_p99": s["kld"]["p99"], "same_top1": s["same_top1"],
            "same_top1_stderr": s["same_top1_stderr"], "ppl_ratio": s["ppl_ratio"]}
