"""What does evalq add on top of the tools it wraps? Side by side, one process, one loaded model.

1. Accuracy: lm_eval.simple_evaluate called directly vs evalq's accuracy step
   (the same call plus what evalq does around it: grouping, metric extraction,
   writing the per-sample records). Target: evalq wall ≤ 1.03× direct.
2. Decode: evalq's speed measurement (generate() with a timestamping streamer)
   vs a bare greedy loop (forward + argmax with the KV cache) on the same
   object. Target: evalq tokens/s ≥ 0.95× the bare loop.

Runs alternate (A B A B ...) so drift hits both sides; medians are reported.
Threads are pinned (default 1) and printed. Run on an otherwise idle machine.

    python scripts/bench_overhead.py [--variant fp16] [--threads 1] [--repeats 5]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def bare_greedy_tokens_per_s(model, input_ids, new_tokens: int) -> float:
    """Greedy decoding by hand: the fastest a Python loop over this model can go."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=input_ids, use_cache=True)
        past = out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        started = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            token.cpu()  # the same host sync generate() does per token
        elapsed = time.perf_counter() - started
    return input_ids.shape[0] * (new_tokens - 1) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="fp16", choices=["fp16", "int8", "nf4"])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a packaged model (evalq.model_sources.EMBEDDED)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evalq.backends.base import get_backend
    from evalq.resources import Resources
    from evalq.matrix import ModelSpec, PerfSettings
    from evalq.measure.accuracy import evaluate
    from evalq.measure.speed import measure_speed, prompt_ids
    from evalq.model_sources import materialize
    from evalq.suites import include_paths, load_suite

    torch.set_num_threads(args.threads)
    backend = get_backend(args.variant)
    files = materialize(ModelSpec(package=args.model))
    loaded = backend.load(files, backend.Config(), Resources(), "")
    model, tok = loaded.model, loaded.tokenizer
    suite = load_suite("demo")  # real benchmarks on the shipped data, a fixed subset of documents
    tasks = [t.task for t in suite.tasks]
    samples = {leaf: ids for t in suite.tasks for leaf, ids in (t.samples or {}).items()} or None
    seed = 1234

    def lm_eval_direct() -> None:
        simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=8), tasks=tasks, num_fewshot=0, samples=samples,
                        task_manager=TaskManager(include_path=include_paths([suite])), log_samples=True, cache_requests=False,
                        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
                        bootstrap_iters=1000)

    def evalq_step() -> None:
        result = evaluate(model, tok, [suite], batch_size=8, limit_cap=None, seed=seed)
        with tempfile.TemporaryDirectory() as tmp, gzip.open(Path(tmp) / "s.json.gz", "wt") as fh:
            json.dump(result["samples"], fh, default=str)

    lm_eval_direct()  # warm-up: dataset building, tokenizer caches
    direct_s, ours_s = [], []
    for _ in range(args.repeats):
        for fn, sink in ((lm_eval_direct, direct_s), (evalq_step, ours_s)):
            t = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t)

    perf = PerfSettings(prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, batch_sizes=[1], warmup=1, repeats=1, threads=args.threads)
    ids = prompt_ids(tok, args.prompt_tokens, 1)
    bare_tps, ours_tps = [], []
    bare_greedy_tokens_per_s(model, ids, args.new_tokens)  # warm-up
    for _ in range(args.repeats):
        bare_tps.append(bare_greedy_tokens_per_s(model, ids, args.new_tokens))
        ours_tps.append(measure_speed(model, tok, perf, "cpu", args.threads)["decode_tokens_per_s"])

    acc_ratio = statistics.median(ours_s) / statistics.median(direct_s)
    dec_ratio = statistics.median(ours_tps) / statistics.median(bare_tps)
    rows = [
        ("accuracy step, lm-eval direct (s)", direct_s),
        ("accuracy step, evalq (s)", ours_s),
        ("decode tok/s, bare greedy loop", bare_tps),
        ("decode tok/s, evalq measure_speed", ours_tps),
    ]
    print(f"\nmodel {args.model} · variant {args.variant} · dtype {loaded.dtype} · torch threads {torch.get_num_threads()} "
          f"· repeats {args.repeats} · prompt {args.prompt_tokens} · new tokens {args.new_tokens} · OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{'measure':40} {'median':>10} {'min':>10} {'max':>10}")
    for name, values in rows:
        print(f"{name:40} {statistics.median(values):10.3f} {min(values):10.3f} {max(values):10.3f}")
    print(f"\naccuracy-step wall ratio evalq / lm-eval direct: {acc_ratio:.3f}  (target ≤ 1.03) {'PASS' if acc_ratio <= 1.03 else 'FAIL'}")
    print(f"decode tok/s ratio evalq / bare loop:            {dec_ratio:.3f}  (target ≥ 0.95) {'PASS' if dec_ratio >= 0.95 else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "accuracy_ratio": acc_ratio, "decode_ratio": dec_ratio,
                                         **{name: values for name, values in rows}}, indent=1))


if __name__ == "__main__":
    main()
