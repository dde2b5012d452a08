"""Time to first token and decode speed, from timestamps taken inside generate().

Greedy decoding with min_new_tokens = max_new_tokens, so every run produces the
same number of tokens. CPU: perf_counter at each token handed to the streamer
(transformers copies the token to the host first, which synchronizes). CUDA: a
CUDA event recorded at the same points.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from evalq.backends.base import is_foreign
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


class TokenClock:
    """A generate() streamer that timestamps the prompt and every new token."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.marks: list[Any] = []

    def _mark(self) -> Any:
        if self.cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        self.marks = [self._mark()]

    def put(self, value: Any) -> None:  # first call: the prompt; then one call per step
        self.marks.append(self._mark())

    def end(self) -> None:
        pass

    def seconds(self) -> list[float]:
        """Seconds from start() to each mark."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            first = self.marks[0]
            return [first.elapsed_time(m) / 1000.0 for m in self.marks]
        return [m - self.marks[0] for m in self.marks]


def generate_timed(model: Any, input_ids: Any, new_tokens: int, pad_token_id: int | None) -> tuple[float, list[float]]:
    """One greedy generation; returns (time to first token, per-token decode latencies), seconds."""
    import torch

    if is_foreign(model):
        return model.generate_timed(input_ids.tolist(), new_tokens)
    cuda = input_ids.device.type == "cuda"
    clock = TokenClock(cuda)
    attention_mask = torch.ones_like(input_ids)
    if cuda:
        torch.cuda.synchronize()
    clock.start()
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad_token_id,
            streamer=clock,
        )
    t = clock.seconds()
    # t[1] is the prompt handed to the streamer, t[2] the first generated token.
    tokens = t[2:]
    if len(tokens) != new_tokens:
        raise RuntimeError(f"generate produced {len(tokens)} tokens, expected {new_tokens}")
    return tokens[0], [b - a for a, b in zip(tokens, tokens[1:])]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def measure_speed(model: Any, tokenizer: Any, perf: Any, device: str, threads: int) -> dict[str, Any]:
    """TTFT, per-token decode latency and tokens/s for each batch size in perf, on `threads` CPU threads."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: dict[str, Any] = {"prompt_tokens": perf.prompt_tokens, "new_tokens": perf.new_tokens,
                           "warmup": perf.warmup, "repeats": perf.repeats, "timer": "cuda_event" if device == "cuda" else "perf_counter",
                           "by_batch": {}}
    with using_threads(threads, model):
        out["threads"] = threads
        for batch in perf.batch_sizes:
            ids = prompt_ids(tokenizer, perf.prompt_tokens, batch)
            ids = ids if isinstance(model.device, str) else ids.to(model.device)
            for _ in range(perf.warmup):
                generate_timed(model, ids, perf.new_tokens, pad)
            ttfts, latencies, rates = [], [], []
            for _ in range(perf.repeats):
                ttft, lat = generate_timed(model, ids, perf.new_tokens, pad)
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
