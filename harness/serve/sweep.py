"""The serve measurement of a cell: its variant behind a real server, a sweep of
request rates through it, the figures per rate and what the sweep concludes."""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalq.resources import Resources
from evalq.serve.load import Load, drive, records_json, summarize
from evalq.serve.process import ServeError, ServerProcess, ServeTimeout, free_port


# Every answer output_tokens long, and its count from the server (a streamed chunk can
# carry more than one token where a token ends inside a UTF-8 character).
OPENAI_EXTRAS = {"ignore_eos": True, "stream_options": {"include_usage": True}}


@dataclass
class Server:
    """How to start one server and talk to it."""

    argv: list[str]
    port: int
    kind: str  # transformers, llama.cpp, vllm, or a test's fake
    model: str  # the name requests give
    extra_body: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] | None = None
    memory_path: str | None = None  # GET → the server's own GPU peak, where it has one


def llama_server_binary() -> str | None:
    """llama.cpp's server from the bindings' own build (`make llama-server` builds it in the
    environment's llama.cpp-build folder, linked to the same libllama), else one on PATH;
    EVALQ_LLAMA_SERVER names another."""
    if os.environ.get("EVALQ_LLAMA_SERVER"):
        return os.environ["EVALQ_LLAMA_SERVER"]
    built = sorted(Path(sys.prefix, "llama.cpp-build").glob("**/bin/llama-server"))
    if built:
        return str(built[0])
    return shutil.which("llama-server")


def server_for(cell: Any, backend: Any, details: dict[str, Any], files: Any, workdir: Path, resources: Resources) -> Server:
    """The server of this cell's variant: llama-server for llama.cpp's runtime, transformers' own
    continuous batching otherwise, vLLM where the matrix asks for it; on the speed phase's threads."""
    s = cell.serve
    threads = resources.threads_for("speed")
    port = free_port()
    context = s.slots * (s.prompt_tokens + s.output_tokens + 16)
    if s.server == "vllm":
        if backend.kv_runtime != "transformers" or cell.variant != "fp16":
            raise ServeError(f"serve.server vllm serves fp16 weights here, not {cell.variant}")
        vllm = shutil.which("vllm")
        if vllm is None:
            raise ServeError("serve.server is vllm but no `vllm` command is installed (pip install vllm on a GPU box)")
        return Server([vllm, "serve", files.path, "--host", "127.0.0.1", "--port", str(port), "--served-model-name",
                       "evalq-served", "--max-num-seqs", str(s.slots), "--max-model-len", str(context), "--seed", str(cell.seed)],
                      port, "vllm", "evalq-served", OPENAI_EXTRAS)
    if backend.kv_runtime == "llama.cpp":
        binary = llama_server_binary()
        if binary is None:
            raise ServeError("no llama-server: `make llama-server` builds it from the bindings' llama.cpp source "
                             "(or set EVALQ_LLAMA_SERVER to one built from the same llama.cpp)")
        argv = [binary, "-m", details["file"], "--host", "127.0.0.1", "--port", str(port), "--parallel", str(s.slots),
                "--ctx-size", str(context), "--threads", str(threads), "--threads-batch", str(threads),
                "--seed", str(cell.seed), "--no-webui", "--alias", "evalq-served"]
        if details.get("extra_buffer_types") is False:  # as the cell loaded it (backends.gguf: AMX)
            argv.append("--no-repack")
        if details.get("n_gpu_layers"):
            argv += ["--n-gpu-layers", str(details["n_gpu_layers"])]
        return Server(argv, port, "llama.cpp", "evalq-served", OPENAI_EXTRAS)
    from evalq.serve.hf_server import SERVED_NAME

    spec = workdir / "serve-spec.json"
    spec.write_text(json.dumps({"cell": json.loads(cell.model_dump_json()), "port": port,
                                "resources": json.loads(resources.to_json()),
                                "workdir": str(workdir), "slots": s.slots, "prompt_tokens": s.prompt_tokens,
                                "output_tokens": s.output_tokens}))
    return Server([sys.executable, "-m", "evalq.serve.hf_server", str(spec)], port, "transformers", SERVED_NAME,
                  memory_path="/evalq/memory")


def prompts_for(tokenizer: Any, text: str, settings: Any, seed: int, n: int) -> list[str]:
    """`n` prompts of `prompt_tokens` tokens cut at seeded places from the text, as text."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < settings.prompt_tokens + 1:
        raise ServeError(f"the serve text has {len(ids)} tokens, fewer than a prompt's {settings.prompt_tokens}")
    rng = random.Random(seed)
    starts = [rng.randrange(len(ids) - settings.prompt_tokens) for _ in range(n)]
    return [tokenizer.decode(ids[i:i + settings.prompt_tokens]) for i in starts]


def rates_of(settings: Any) -> list[float]:
    """The matrix's rates as numbers, "inf" as math.inf."""
    return [math.inf if r == "inf" else float(r) for r in settings.rates]


def requests_at(rate: float, settings: Any) -> int:
    if math.isinf(rate):
        return settings.max_requests
    return max(1, min(settings.max_requests, round(rate * settings.duration_s)))


def prompts_needed(settings: Any) -> int:
    """A prompt for every request of the sweep, the warm-up's and the single stream's included."""
    return 1 + settings.single_stream + sum(requests_at(rate, settings) for rate in rates_of(settings))


def sweep(server: Server, prompts: list[str], settings: Any, seed: int, log: Path,
          on_step: Any = None) -> dict[str, Any]:
    """Start the server, warm it with one request, send `single_stream` requests one at a time,
    drive each rate in turn, stop it; `on_step(label, figures)` after each. Each
    request takes the next of `prompts` (wrapping round only where too few are given).
    Raises ServeError (it failed to start, died, or answered no request of a rate) or
    ServeTimeout (not healthy in time, or it stopped answering); any exception raised carries
    `partial`: the figures measured before (the serve phase stores them with its failure)."""
    measured: dict[str, Any] = {"single_stream": None, "steps": []}
    try:
        return _sweep(server, prompts, settings, seed, log, on_step, measured)
    except Exception as exc:  # the load generator's own errors too: what was measured before is kept
        exc.partial = {"server": server.kind, **measured, **conclusions(measured["steps"])}
        raise


def _sweep(server: Server, prompts: list[str], settings: Any, seed: int, log: Path, on_step: Any,
           measured: dict[str, Any]) -> dict[str, Any]:
    slo = settings.slo.model_dump()
    steps, raw = measured["steps"], []
    unused = iter(prompts * (1 + prompts_needed(settings) // len(prompts)))

    def take(n: int) -> list[str]:  # never a prompt twice: a server's prefix cache would skip its prefill
        return [next(unused) for _ in range(n)]

    with ServerProcess(server.argv, server.port, log, env=server.env, start_timeout_s=settings.start_timeout_s) as proc:
        warm = Load(rate=math.inf, requests=1, output_tokens=settings.output_tokens, seed=seed,
                    request_timeout_s=settings.request_timeout_s, extra_body=server.extra_body)
        _check(drive(proc.base_url, server.model, take(1), warm)[0], "the warm-up request", proc)
        if settings.single_stream:  # one request at a time: the server's decode beside the cell's own batch-1 figures
            alone = Load(rate=math.inf, requests=settings.single_stream, output_tokens=settings.output_tokens, seed=seed,
                         max_concurrency=1, request_timeout_s=settings.request_timeout_s, extra_body=server.extra_body)
            what = "one request at a time"
            records, wall = drive(proc.base_url, server.model, take(alone.requests), alone)
            _check(records, what, proc)
            measured["single_stream"] = summarize(records, wall, math.inf, slo)
            if on_step:
                on_step(what, measured["single_stream"])
        for i, rate in enumerate(rates_of(settings)):
            load = Load(rate=rate, requests=requests_at(rate, settings), output_tokens=settings.output_tokens,
                        seed=seed + i, max_concurrency=settings.max_concurrency,
                        request_timeout_s=settings.request_timeout_s, extra_body=server.extra_body)
            what = f"rate {rate:g}/s"
            records, wall = drive(proc.base_url, server.model, take(load.requests), load)
            _check(records, what, proc)
            step = summarize(records, wall, rate, slo)
            steps.append(step)
            raw.append(records_json(records))
            if on_step:
                on_step(what, step)
        gpu = _server_memory(proc.base_url, server.memory_path)
        peak_rss = proc.peak_rss_bytes
    return {"server": server.kind, "single_stream": measured["single_stream"], "steps": steps, "records": raw,
            "peak_rss_bytes": peak_rss, **gpu, **conclusions(steps)}


def _check(records: list[Any], what: str, proc: ServerProcess) -> None:
    proc.check_alive()
    if any(r.ok for r in records):
        return
    reasons = sorted({r.error for r in records})
    if all(r.error and r.error.startswith("no complete answer") for r in records):
        raise ServeTimeout(f"the server stopped answering at {what}: {reasons[0]} (log: {proc.log_tail(300)})")
    raise ServeError(f"every request failed at {what}: {'; '.join(reasons)[:400]}")


def _server_memory(base_url: str, path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    import urllib.request

    try:
        with urllib.request.urlopen(base_url + path, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return {}


def conclusions(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The sweep in three figures: the highest rate whose p90 TTFT and TPOT met the SLO with
    no error, the goodput there, and the most output tokens/s any rate achieved (saturation)."""
    within = [s for s in steps if s["within_slo"]]
    best = max(within, key=lambda s: math.inf if s["rate"] is None else s["rate"], default=None)
    top = max(steps, key=lambda s: s["output_tokens_per_s"] or 0, default=None)
    return {
        "max_rate_within_slo": None if best is None else ("inf" if best["rate"] is None else best["rate"]),
        "goodput_at_max_rate": None if best is None else best["goodput"],
        "max_goodput": max((s["goodput"] or 0 for s in steps), default=None),
        "saturation_requests_per_s": None if top is None else top["requests_per_s"],
        "saturation_output_tokens_per_s": None if top is None else top["output_tokens_per_s"],
    }
