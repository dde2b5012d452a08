"""lm-eval's HFLM against evalq's shared-context scorer, side by side in one process.

For each model and each demo task, the same documents are scored by both (the
order alternates per task), and only the time inside `_loglikelihood_tokens` is
counted: task building and metrics are the same code on both sides. Prints a
table with the ratio per task and model and the largest |Δ log-likelihood|.

    python scripts/bench_scorer.py --docs 20 --threads 1
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

MODELS = {"SmolLM2-135M": "smollm2-135m-instruct", "Gemma-3-270M": "gemma3-270m"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20, help="documents per demo task")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (pinned: timings at 2 threads vary 6×)")
    ap.add_argument("--dtype", default="auto", help="auto (this CPU's), float32 or bfloat16")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    args = ap.parse_args()

    import torch

    from evalq.backends.base import get_backend
    from evalq.cpu import auto_cpu_dtype, cpu_features
    from evalq.matrix import ModelSpec
    from evalq.measure.accuracy import evaluate
    from evalq.measure.torch_model import TorchModel
    from evalq.model_sources import materialize
    from evalq.suites import load_suite

    torch.set_num_threads(args.threads)
    dtype = auto_cpu_dtype() if args.dtype == "auto" else args.dtype
    suite = load_suite("demo")
    features = cpu_features()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    print(f"# {cpu} ({' '.join(features['flags'])}), {os.cpu_count()} cores, torch threads {args.threads}, dtype {dtype}, "
          f"{args.docs} documents per task, batch {args.batch_size}")
    rows, totals = [], {}
    for name in args.models:
        files = materialize(ModelSpec(package=MODELS[name]))
        fp16 = get_backend("fp16")
        loaded = fp16.load(files, fp16.Config(dtype=dtype), "cpu", "")
        for k, task in enumerate(suite.tasks):
            one = suite.model_copy(update={"tasks": [task.model_copy(
                update={"samples": {leaf: ids[: args.docs] for leaf, ids in task.samples.items()}})]})
            seconds, answers = {}, {}
            for scorer in (("lm-eval", "evalq") if k % 2 == 0 else ("evalq", "lm-eval")):
                original = TorchModel.lm_eval_lm

                def timed_lm(self, batch_size, _scorer, _s=scorer, _orig=original):
                    lm = _orig(self, batch_size, _s)
                    lm.softmax_dtype = torch.float32  # the same log-softmax dtype on both sides
                    inner = lm._loglikelihood_tokens

                    def timed(*a, **kw):
                        started = time.perf_counter()
                        out = inner(*a, **kw)
                        seconds[_s] = seconds.get(_s, 0.0) + time.perf_counter() - started
                        return out

                    lm._loglikelihood_tokens = timed
                    return lm

                TorchModel.lm_eval_lm = timed_lm
                try:
                    acc = evaluate(loaded.model, loaded.tokenizer, [one], args.batch_size, None, 1234, scorer=scorer)
                finally:
                    TorchModel.lm_eval_lm = original
                answers[scorer] = {(s["doc_id"], i): float(r[0]) for ss in acc["samples"].values()
                                   for s in ss for i, r in enumerate(s["filtered_resps"])}
            delta = max(abs(answers["evalq"][key] - value) for key, value in answers["lm-eval"].items())
            rows.append((name, task.task, seconds["lm-eval"], seconds["evalq"], delta))
            total = totals.setdefault(name, [0.0, 0.0])
            total[0] += seconds["lm-eval"]
            total[1] += seconds["evalq"]
    print(f"{'model':14} {'task':14} {'lm-eval s':>10} {'evalq s':>9} {'ratio':>6} {'max|Δll|':>9}")
    for name, task, a, b, delta in rows:
        print(f"{name:14} {task:14} {a:10.2f} {b:9.2f} {a / b:5.2f}× {delta:9.2g}")
    for name, (a, b) in totals.items():
        print(f"{name:14} {'all tasks':14} {a:10.2f} {b:9.2f} {a / b:5.2f}×")


if __name__ == "__main__":
    main()
