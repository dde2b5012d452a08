"""How long would a whole suite take here? Times each task of a suite on a sample
of its documents, through evalq's own accuracy step on one loaded model, and
extrapolates to every document of the task (lm-eval's `n-samples` original count).
Only the model's time (lm-eval's loglikelihood and generation calls) is scaled;
the fixed cost of building a task (indexing, loading its data) is counted once.

A run of `core` in full is hours on a 2-core CPU; this says how many before you
start one. Time ∝ documents is an approximation: documents are drawn from the
start of each task (lm-eval's limit), and their lengths vary.

    python scripts/time_suite.py --suite core --limit 8 [--variant fp16] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="core")
    ap.add_argument("--limit", type=int, default=8, help="documents per task (per subject for a group)")
    ap.add_argument("--variant", default="fp16", choices=["fp16", "int8", "nf4"])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a packaged model (evalq.model_sources.EMBEDDED)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import torch

    from evalq.backends.base import get_backend
    from evalq.resources import Resources
    from evalq.cpu import cpu_features
    from evalq.env import cpu_model
    from evalq.matrix import ModelSpec
    from evalq.measure.accuracy import evaluate
    from evalq.model_sources import materialize
    from evalq.suites import Suite, load_suite

    from lm_eval.models.huggingface import HFLM

    model_seconds = [0.0]

    def timed(method):
        def run(self, *a, **kw):
            started = time.perf_counter()
            try:
                return method(self, *a, **kw)
            finally:
                model_seconds[0] += time.perf_counter() - started
        return run

    for name in ("loglikelihood", "loglikelihood_rolling", "generate_until"):
        setattr(HFLM, name, timed(getattr(HFLM, name)))

    torch.set_num_threads(args.threads)
    backend = get_backend(args.variant)
    loaded = backend.load(materialize(ModelSpec(package=args.model)), backend.Config(), Resources(), "")
    suite = load_suite(args.suite)
    features = cpu_features()
    print(f"model {args.model} · variant {args.variant} · dtype {loaded.dtype} · torch threads {torch.get_num_threads()} · "
          f"batch {args.batch_size} · {args.limit} documents per task · CPU {cpu_model()} "
          f"(flags {', '.join(features['flags'])}; auto dtype {features['auto_dtype']}) · OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{'task':16} {'shots':>5} {'docs run':>8} {'wall s':>7} {'model s':>7} {'model s/doc':>11} {'all docs':>9} {'extrapolated':>13}")
    total = 0.0
    for spec in suite.tasks:
        one = Suite(name=f"{suite.name}-{spec.task}", tasks=[spec.model_copy(update={"limit": None, "samples": None})],
                    data=suite.data, data_version=suite.data_version)
        model_seconds[0] = 0.0
        started = time.perf_counter()
        res = evaluate(loaded.model, loaded.tokenizer, [one], args.batch_size, args.limit, seed=1234)
        wall = time.perf_counter() - started
        counts = list(res["n_samples"].values())
        ran = sum(n["effective"] for n in counts)
        everything = sum(n["original"] for n in counts)
        per_doc = model_seconds[0] / ran
        estimate = wall - model_seconds[0] + per_doc * everything
        total += estimate
        print(f"{spec.task:16} {spec.num_fewshot:5} {ran:8} {wall:7.1f} {model_seconds[0]:7.1f} {per_doc:11.3f} {everything:9,} {estimate / 3600:11.2f} h")
    print(f"\n{suite.name} in full, extrapolated: {total / 3600:.1f} h for this variant on this machine")


if __name__ == "__main__":
    main()
