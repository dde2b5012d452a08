"""Time to first token and decode speed, from timestamps taken inside generate().

Greedy decoding with min_new_tokens = max_new_tokens, so every run produces the
same number of tokens. CPU: perf_counter at each token handed to the streamer
(transformers copies the token to the host first, which synchronizes). CUDA: a
CUDA event recorded at the same points.
"""
from __future__ import annotations

import statistics
from typing import Any

from evalq.measure.torch_model import measured
from evalq.threads import using as using_threads

# Any fixed English text: only its token count matters, and it must not change.
PROMPT_TEXT = (
    "The history of measurement is a history of agreement. Merchants in ancient markets "
    "compared their weights against stones kept by the temple, surveyors stretched knotted "
    "ropes between marks on the ground, and astronomers timed the passage of stars across "
    "a wire in their telescopes. Each of these practices turned a private judgement into a "
    "public number that another person could check. "
)


def prompt_ids(tokenizer: Any, n_tokens: int, batch: int):
    import torch

    ids = tokenizer(PROMPT_TEXT, add_special_tokens=False).input_ids
    reps = -(-n_tokens // len(ids))
    ids = (ids * reps)[:n_tokens]
    if tokenizer.bos_token_id is not None and n_tokens > 1:
        ids = [tokenizer.bos_token_id] + ids[: n_tokens - 1]
    return torch.tensor([ids] * batch, dtype=torch.long)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure_speed(model: Any, tokenizer: Any, perf: Any, device: str, threads: int) -> dict[str, Any]:
    """TTFT, per-token decode latency and tokens/s for each batch size in perf, on `threads` CPU threads."""
    subject = measured(model, tokenizer)
    out: dict[str, Any] = {"prompt_tokens": perf.prompt_tokens, "new_tokens": perf.new_tokens,
                           "warmup": perf.warmup, "repeats": perf.repeats, "timer": "cuda_event" if device == "cuda" else "perf_counter",
                           "by_batch": {}}
    with using_threads(threads, model):
        out["threads"] = threads
        for batch in perf.batch_sizes:
            ids = prompt_ids(tokenizer, perf.prompt_tokens, batch).tolist()
            for _ in range(perf.warmup):
                subject.generate_timed(ids, perf.new_tokens)
            ttfts, latencies, rates = [], [], []
            for _ in range(perf.repeats):
                ttft, lat = subject.generate_timed(ids, perf.new_tokens)
                ttfts.append(ttft)
                latencies += lat
                rates.append(batch * len(lat) / sum(lat))
            out["by_batch"][str(batch)] = {
                "ttft_ms": statistics.median(ttfts) * 1000,
                "ttft_ms_runs": [x * 1000 for x in ttfts],
                "decode_ms_median": statistics.median(latencies) * 1000,
                "decode_ms_p90": percentile(latencies, 0.9) * 1000,
                "decode_tokens_per_s": statistics.median(rates),
                "decode_tokens_per_s_runs": rates,
            }
    at_one = out["by_batch"].get("1", {})  # the headline numbers are at batch 1
    out["ttft_ms"] = at_one.get("ttft_ms")
    out["decode_tokens_per_s"] = at_one.get("decode_tokens_per_s")
    return out
