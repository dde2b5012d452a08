"""Accuracy through lm-evaluation-harness, on the model object already loaded.

Never shares lm-eval's request cache between cells: its key leaves the model
out, so a cached answer from fp16 would be replayed for nf4.
"""
from __future__ import annotations

import itertools
from typing import Any

from evalq.backends.base import is_foreign
from evalq.suites import Suite


def lm_eval_groups(suites: list[Suite], limit_cap: int | None) -> list[tuple[int, int | None, list[str]]]:
    """(num_fewshot, limit, tasks) groups: simple_evaluate takes one of each per call."""
    specs = []
    for suite in suites:
        for t in suite.tasks:
            limit = min(x for x in (t.limit, limit_cap) if x) if (t.limit or limit_cap) else None
            specs.append((t.num_fewshot, limit, t.task))
    specs = list(dict.fromkeys(specs))
    key = lambda s: (s[0], s[1] or 0)  # noqa: E731
    return [(fs, lim, [s[2] for s in grp]) for (fs, lim), grp in
            ((k, list(g)) for k, g in itertools.groupby(sorted(specs, key=key), key=lambda s: (s[0], s[1])))]


def split_metrics(task_results: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's {"acc,none": x, "acc_stderr,none": y, "alias": ...} → {"acc": x, "acc_stderr": y}."""
    out = {}
    for name, value in task_results.items():
        if name == "alias" or not isinstance(value, (int, float)):
            continue
        metric, _, filt = name.partition(",")
        out[metric if filt in ("none", "") else f"{metric},{filt}"] = value
    return out


def evaluate(model: Any, tokenizer: Any, suites: list[Suite], batch_size: int, limit_cap: int | None, seed: int) -> dict[str, Any]:
    """Run every task of the suites; return metrics (task → metric → value),
    sample counts, task configs and lm-eval's per-sample records."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if is_foreign(model):
        lm = model.lm_eval_lm(batch_size)
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    task_manager = TaskManager(include_path=sorted({str(d) for s in suites for d in s.task_dirs()}))
    metrics: dict[str, dict[str, Any]] = {}
    n_samples: dict[str, Any] = {}
    versions: dict[str, Any] = {}
    samples: dict[str, list] = {}
    for num_fewshot, limit, tasks in lm_eval_groups(suites, limit_cap):
        res = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=task_manager,
            log_samples=True,
            cache_requests=False,
            use_cache=None,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            bootstrap_iters=1000,
        )
        for task, values in res["results"].items():
            metrics[task] = split_metrics(values)
            metrics[task]["num_fewshot"] = num_fewshot
        n_samples.update(res.get("n-samples", {}))
        versions.update(res.get("versions", {}))
        samples.update(res.get("samples", {}))
    return {"metrics": metrics, "n_samples": n_samples, "task_versions": versions, "samples": samples}
