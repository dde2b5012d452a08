"""lm-eval's HFLM against evalq's shared-context scorer, side by side in one process.

For each model and each demo task, the same documents are scored by both (the
order alternates per task), and only the time inside `_loglikelihood_tokens` is
counted: task building and metrics are the same code on both sides. Prints a
table with the ratio per task and model and the largest |Δ log-likelihood|.
With llama-cpp-python installed, the packages' GGUF files too: each request
decoded from its first token against each context's KV kept for its choices.

    python scripts/bench_scorer.py --docs 20 --threads 1
"""
from __future__ import annotations

import argparse
import importlib.util
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
    ap.add_argument("--gguf", action=argparse.BooleanOptionalAction, default=importlib.util.find_spec("llama_cpp") is not None,
                    help="also the packages' GGUF files through llama.cpp (default: where llama-cpp-python is installed)")
    args = ap.parse_args()

    import torch

    from evalq.backends.base import get_backend
    from evalq.resources import Resources
    from evalq.cpu import auto_cpu_dtype, cpu_features
    from evalq.matrix import ModelSpec
    from evalq.measure.accuracy import evaluate
    from evalq.measure.torch_model import TorchModel
    from evalq.model_sources import materialize
    from evalq.suites import load_suite

    torch.set_num_threads(args.threads)
    dtype = auto_cpu_dtype() if args.dtype == "auto" else args.dtype
    suite = load_suite("demo").first(args.docs)
    features = cpu_features()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    print(f"# {cpu} ({' '.join(features['flags'])}), {os.cpu_count()} cores, torch threads {args.threads}, dtype {dtype}, "
          f"{args.docs} documents per task, batch {args.batch_size}")
    rows, totals = [], {}

    def side_by_side(name: str, model, tokenizer, sides: dict[str, tuple[type, object]]) -> None:
        """sides: label → (the model class whose lm_eval_lm is patched, lm(self, batch_size) to return);
        the first label is the baseline of the ratio."""
        for k, task in enumerate(suite.tasks):
            one = suite.model_copy(update={"tasks": [task]})
            seconds, answers = {}, {}
            for label in (list(sides) if k % 2 == 0 else list(sides)[::-1]):
                cls, make = sides[label]
                original = cls.lm_eval_lm

                def timed_lm(self, batch_size, _scorer=None, _label=label, _make=make):
                    lm = _make(self, batch_size)
                    inner = lm._loglikelihood_tokens

                    def timed(*a, **kw):
                        started = time.perf_counter()
                        out = inner(*a, **kw)
                        seconds[_label] = seconds.get(_label, 0.0) + time.perf_counter() - started
                        return out

                    lm._loglikelihood_tokens = timed
                    return lm

                cls.lm_eval_lm = timed_lm
                try:
                    acc = evaluate(model, tokenizer, [one], args.batch_size, None, 1234)
                finally:
                    cls.lm_eval_lm = original
                answers[label] = {(s["doc_id"], i): float(r[0]) for ss in acc["samples"].values()
                                  for s in ss for i, r in enumerate(s["filtered_resps"])}
            base, new = list(sides)
            delta = max(abs(answers[new][key] - value) for key, value in answers[base].items())
            rows.append((name, task.task, seconds[base], seconds[new], delta))
            total = totals.setdefault(name, [0.0, 0.0])
            total[0] += seconds[base]
            total[1] += seconds[new]

    def hf_side(scorer: str):
        def make(self, batch_size, _orig=TorchModel.lm_eval_lm):
            lm = _orig(self, batch_size, scorer)
            lm.softmax_dtype = torch.float32  # the same log-softmax dtype on both sides
            return lm
        return TorchModel, make

    for name in args.models:
        files = materialize(ModelSpec(package=MODELS[name]))
        fp16 = get_backend("fp16")
        loaded = fp16.load(files, fp16.Config(dtype=dtype), Resources(), "")
        side_by_side(name, loaded.model, loaded.tokenizer, {"lm-eval": hf_side("lm-eval"), "evalq": hf_side("evalq")})
        del loaded
    if args.gguf:  # llama.cpp: each request from its first token, against the context's KV kept for its choices
        from evalq.backends.llamacpp import LlamaCppModel
        from evalq.backends.llamacpp_lm import LlamaCppLM
        from evalq.model_sources import _gguf_file

        for name in args.models:
            model = LlamaCppModel(str(_gguf_file(ModelSpec(package=MODELS[name]))))
            model.set_threads(args.threads)
            side_by_side(f"{name} GGUF", model, None, {
                "each request": (LlamaCppModel, lambda self, bs: LlamaCppLM(self, bs, reuse_prefix=False)),
                "shared": (LlamaCppModel, lambda self, bs: LlamaCppLM(self, bs, reuse_prefix=True))})
            model.close()
    print("# baseline: lm-eval's HFLM (transformers rows), each request decoded from its first token (GGUF rows)")
    print(f"{'model':19} {'task':14} {'baseline s':>10} {'evalq s':>9} {'ratio':>6} {'max|Δll|':>9}")
    for name, task, a, b, delta in rows:
        print(f"{name:19} {task:14} {a:10.2f} {b:9.2f} {a / b:5.2f}× {delta:9.2g}")
    for name, (a, b) in totals.items():
        print(f"{name:19} {'all tasks':14} {a:10.2f} {b:9.2f} {a / b:5.2f}×")


if __name__ == "__main__":
    main()
