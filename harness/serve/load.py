"""The load generator: `vllm bench serve`'s method, written small (guidellm's current
releases pin click~=8.4, which evalq's lock cannot take beside typer's 8.5).

Requests go to an OpenAI-compatible `/v1/completions` endpoint, streamed; their
arrival times are a seeded Poisson process at the requested rate (all at once
for `inf`), optionally capped at `max_concurrency` in flight. Each request's
first streamed token gives its TTFT; the tokens after it, its time per output
token (TPOT = (last − first) / (tokens − 1), as vLLM's benchmark defines it).
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Record:
    """One request as the client saw it (times in seconds from the sweep step's start)."""

    sent: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.first is not None

    @property
    def ttft_ms(self) -> float | None:
        return (self.first - self.sent) * 1e3 if self.ok else None

    @property
    def tpot_ms(self) -> float | None:
        if not self.ok or self.tokens < 2:
            return None
        return (self.last - self.first) * 1e3 / (self.tokens - 1)


@dataclass
class Load:
    """One step of a sweep: how many requests, how they arrive."""

    rate: float  # requests per second; math.inf: all at once
    requests: int
    output_tokens: int
    seed: int
    max_concurrency: int | None = None
    request_timeout_s: float = 120.0
    extra_body: dict[str, Any] = field(default_factory=dict)  # per server, e.g. llama.cpp's ignore_eos

    def arrivals(self) -> list[float]:
        if math.isinf(self.rate):
            return [0.0] * self.requests
        rng = random.Random(self.seed)
        t, out = 0.0, []
        for _ in range(self.requests):
            out.append(t)
            t += rng.expovariate(self.rate)
        return out


async def _one(session: Any, url: str, model: str, prompt: str, load: Load, start: float, at: float,
               gate: asyncio.Semaphore | None) -> Record:
    import aiohttp

    await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
    if gate is not None:
        await gate.acquire()
    rec = Record(sent=time.perf_counter() - start)
    body = {"model": model, "prompt": prompt, "max_tokens": load.output_tokens, "temperature": 0.0,
            "stream": True, **load.extra_body}
    try:
        timeout = aiohttp.ClientTimeout(total=load.request_timeout_s)
        async with session.post(url, json=body, timeout=timeout) as resp:
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return rec
            usage = None
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    rec.error = f"server error: {str(chunk['error'])[:200]}"
                    return rec
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if chunk.get("choices") and chunk["choices"][0].get("text") is not None:
                    now = time.perf_counter() - start
                    rec.first = now if rec.first is None else rec.first
                    rec.last = now
                    rec.tokens += 1
            if usage and usage.get("completion_tokens"):
                rec.tokens = int(usage["completion_tokens"])
            if rec.first is None:
                rec.error = "the stream ended without a token"
    except asyncio.TimeoutError:
        rec.error = f"no complete answer within {load.request_timeout_s:g} s"
    except (aiohttp.ClientError, json.JSONDecodeError, ConnectionError) as exc:
        rec.error = f"{exc.__class__.__name__}: {exc}"[:200]
    finally:
        if gate is not None:
            gate.release()
    return rec


async def _run(base_url: str, model: str, prompts: list[str], load: Load) -> tuple[list[Record], float]:
    import aiohttp

    url = base_url.rstrip("/") + "/v1/completions"
    gate = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else None
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        tasks = [_one(session, url, model, prompts[i % len(prompts)], load, start, at, gate)
                 for i, at in enumerate(load.arrivals())]
        records = await asyncio.gather(*tasks)
        return list(records), time.perf_counter() - start


def drive(base_url: str, model: str, prompts: list[str], load: Load) -> tuple[list[Record], float]:
    """Send the load; every request ends (answered, failed or timed out) before this returns."""
    coro = _run(base_url, model, prompts, load)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop already runs in this thread (a notebook, playwright's sync API) and asyncio.run
    # refuses to nest: the load gets a thread and a loop of its own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0–100) as the speed phase computes it (numpy's linear rule); None of nothing."""
    from evalq.measure.speed import percentile as fraction_percentile

    return fraction_percentile(values, q / 100) if values else None


def summarize(records: list[Record], wall_s: float, rate: float, slo: dict[str, float]) -> dict[str, Any]:
    """A sweep step's figures. Goodput counts the requests that met both SLOs (TTFT and
    TPOT, a one-token answer by its TTFT alone) per second of the step's wall time."""
    done = [r for r in records if r.ok]
    ttft = [r.ttft_ms for r in done]
    tpot = [r.tpot_ms for r in done if r.tpot_ms is not None]
    good = [r for r in done if r.ttft_ms <= slo["ttft_ms"] and (r.tpot_ms is None or r.tpot_ms <= slo["tpot_ms"])]
    errors = [r.error for r in records if not r.ok]
    out: dict[str, Any] = {
        "rate": None if math.isinf(rate) else rate,  # JSON has no infinity: null = all at once
        "requests": len(records),
        "completed": len(done),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "wall_s": wall_s,
        "requests_per_s": len(done) / wall_s if wall_s > 0 else None,
        "output_tokens_per_s": sum(r.tokens for r in done) / wall_s if wall_s > 0 else None,
        "goodput": len(good) / wall_s if wall_s > 0 else None,
        "slo_met": len(good) / len(records) if records else None,
    }
    for name, values in (("ttft_ms", ttft), ("tpot_ms", tpot)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}"] = percentile(values, q)
    out["within_slo"] = (not errors and out["ttft_ms_p90"] is not None and out["ttft_ms_p90"] <= slo["ttft_ms"]
                         and (out["tpot_ms_p90"] is None or out["tpot_ms_p90"] <= slo["tpot_ms"]))
    return out


def records_json(records: list[Record]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
