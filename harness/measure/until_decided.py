"""Accuracy in rounds until the verdict is decided (eval.until_decided).

Each task's documents are drawn in one seeded order (the seed and the task's name:
every cell of a matrix, on every machine, sees the same order), at most `pool` of
them. The fp16 baseline evaluates its whole budget; a quantized cell evaluates
`step` documents of each task at a time, pairs them with the baseline's scores of
the same documents (handed over in `cell.baseline_scores`), and stops as soon as
evalq.sequential's confidence sequence decides every gate asked for and every
equal-cost question of its model (`compare`: against another model's fp16 scores,
handed over in `cell.rival_scores`), or when the budget (`max_documents`,
`max_seconds`) or the baseline's documents run out.

Metrics are recomputed over every round's per-document records, as lm-eval's mean
aggregation and its stderr (sample standard deviation / √n) define them.

After each round the records so far are saved (`checkpoint`, in the cache, keyed by
the cell without its until_decided settings). A cell whose run died, or one run
again with a larger budget, continues from its last saved round in the same order
rather than from the first document: a confidence sequence may be continued at
any time without losing its error rate.
"""
from __future__ import annotations

import gzip
import json
import os
import statistics
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evalq.headlines import PERPLEXITY_METRIC, document_scores
from evalq.sequential import EqualCost, Sequential, decided, equal_cost, verdict as sequence_verdict
from evalq.suites import Suite, TaskSpec

Evaluate = Callable[[list[Suite]], dict[str, Any]]  # accuracy.evaluate on the loaded model, for these suites


def headline_metric(task: TaskSpec) -> str:
    return task.metric or "acc"


def draw_order(task: TaskSpec, seed: int, split_size: Callable[[str], int], pool: int | None) -> list[int]:
    """The task's documents in the order they are evaluated: a seeded permutation of its
    fixed subset (else of the whole split), cut to `pool`."""
    if task.samples is not None and set(task.samples) != {task.task}:
        raise ValueError(f"eval.until_decided: {task.task} is a group of tasks ({', '.join(sorted(task.samples))}); "
                         f"draw orders are per task, and groups are not supported yet")
    ids = task.samples[task.task] if task.samples is not None else list(range(split_size(task.task)))
    if task.limit:
        ids = ids[: task.limit]
    rng = np.random.default_rng([seed, zlib.crc32(task.task.encode())])
    order = [int(ids[i]) for i in rng.permutation(len(ids))]
    return order[:pool] if pool else order


def lm_eval_split_size(suites: list[Suite]) -> Callable[[str], int]:
    """How many evaluation documents lm-eval's task has (its dataset, loaded once)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from evalq.suites import include_paths, needs_lm_eval_index

    manager = TaskManager(include_path=include_paths(suites), include_defaults=needs_lm_eval_index(suites))
    return lambda name: len(list(get_task_dict([name], manager)[name].eval_docs))


def round_suites(suites: list[Suite], ids: dict[str, list[int]], first: bool) -> list[Suite]:
    """The suites cut to these documents of each drawn task; the tasks not drawn
    (perplexities) whole in the first round only."""
    out = []
    for s in suites:
        tasks = [t.model_copy(update={"samples": {t.task: ids[t.task]}, "limit": None}) if t.task in ids else t
                 for t in s.tasks if t.task in ids or first]
        if tasks:
            out.append(s.model_copy(update={"tasks": tasks}))
    return out


def recompute_metrics(samples: dict[str, list[dict[str, Any]]], last: dict[str, dict[str, Any]],
                      drawn: set[str]) -> dict[str, dict[str, Any]]:
    """task → metrics, the drawn tasks' over all rounds' records: every per-document
    metric's mean and stderr (the others as evaluated, in the first round)."""
    out = {}
    for task, metrics in last.items():
        if task not in drawn:
            out[task] = metrics
            continue
        records = samples.get(task) or []
        out[task] = {"num_fewshot": metrics.get("num_fewshot")}
        for name in metrics:
            values = [float(r[name]) for r in records if isinstance(r.get(name), (int, float, bool))]
            if name.endswith("_stderr") or name == "num_fewshot" or not values:
                continue
            out[task][name] = statistics.fmean(values)
            out[task][f"{name}_stderr"] = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return out


def paired_rounds(orders: dict[str, list[int]], n: int, mine: dict[str, dict[str, float]],
                  baseline: dict[str, dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, tasks) arrays of this cell's and the baseline's scores, in draw order, over
    the first n rounds the baseline scored for every task."""
    tasks = sorted(orders)
    x, y = [], []
    for i in range(n):
        ids = [str(orders[t][i]) for t in tasks]
        if not all(d in baseline.get(t, {}) and d in mine.get(t, {}) for t, d in zip(tasks, ids)):
            break
        x.append([mine[t][d] for t, d in zip(tasks, ids)])
        y.append([baseline[t][d] for t, d in zip(tasks, ids)])
    return np.array(x, dtype=np.float64).reshape(-1, len(tasks)), np.array(y, dtype=np.float64).reshape(-1, len(tasks))


def by_doc_id(samples: list[dict[str, Any]], metric: str) -> dict[str, float]:
    return {doc_id: v for (doc_id, _), v in document_scores(samples, metric).items()}


class Looks:
    """The sequence's looks at a cell's rounds: after each, the gates' verdict against the
    fp16 baseline and each equal-cost question's answer, and whether to stop."""

    def __init__(self, orders: dict[str, list[int]], metric: dict[str, str], settings: Any, budget: int,
                 baseline: dict[str, dict[str, float]] | None,
                 rivals: dict[str, tuple[float, dict[str, dict[str, float]]]] | None, log: Callable[[str], None]):
        self.orders, self.metric, self.settings, self.budget = orders, metric, settings, budget
        self.baseline, self.rivals, self.log = baseline, rivals or {}, log
        self.gates = tuple(settings.gates)
        self.verdict: Sequential | None = None
        self.questions: dict[str, EqualCost] = {}
        self.pairs: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}  # each question's scores at the last look

    def open_questions(self, mine: dict[str, dict[str, float]], done: int) -> bool:
        """Judge each equal-cost question; whether one is still undecided with documents left to pair."""
        waiting = False
        for against, (margin, scores) in self.rivals.items():
            xr, yr = paired_rounds(self.orders, done, mine, scores)
            if len(xr):
                self.pairs[against] = (xr, yr, margin)
                self.questions[against] = equal_cost(xr, yr, against, margin, self.settings.alpha, interval=False)
                self.log(f"@@evalq until_decided n={done}/{self.budget} against {against} fp16: {self.questions[against].verdict}")
            waiting |= len(xr) == done and (against not in self.questions or self.questions[against].verdict == "undecided")
        return waiting

    def look(self, samples: dict[str, list[dict[str, Any]]], done: int) -> str | None:
        """The verdict after `done` documents a task; the reason to stop, if any."""
        if self.baseline is None:
            self.log(f"@@evalq until_decided n={done}/{self.budget}")
            return None
        mine = {t: by_doc_id(samples.get(t, []), self.metric[t]) for t in self.orders}
        x, y = paired_rounds(self.orders, done, mine, self.baseline)
        waiting = self.open_questions(mine, done)
        if len(x):
            v = self.verdict = sequence_verdict(x, y, self.gates, self.settings.alpha)
            self.log(f"@@evalq until_decided n={done}/{self.budget} recovery={v.recovery or 0:.4f} "
                     f"[{v.recovery_lo}, {v.recovery_hi}] " + " ".join(f"{g}:{r.verdict}" for g, r in v.gates.items()))
            if decided(v, self.gates) and not waiting:
                return "decided"
        return "baseline" if len(x) < done else None  # the baseline scored no more documents to pair with

    def answers(self) -> dict[str, EqualCost]:
        """The equal-cost answers at the last look, with their intervals."""
        return {k: equal_cost(xr, yr, k, margin, self.settings.alpha) for k, (xr, yr, margin) in self.pairs.items()}


def evaluate_until_decided(evaluate: Evaluate, suites: list[Suite], settings: Any, seed: int, baseline: dict[str, dict[str, float]] | None,
                           split_size: Callable[[str], int], log: Callable[[str], None] = print,
                           checkpoint: Path | None = None,
                           rivals: dict[str, tuple[float, dict[str, dict[str, float]]]] | None = None) -> dict[str, Any]:
    """evaluate()'s answer over the documents evaluated, plus `until_decided`: the draw
    orders, the documents per task, the stopping reason and the sequence's verdict.
    `rivals`: the equal-cost questions, other model → (margin, its fp16 scores)."""
    specs = [t for s in suites for t in s.tasks if headline_metric(t) != PERPLEXITY_METRIC]
    if not specs:
        raise ValueError("eval.until_decided: the suites have no accuracy task to decide on")
    orders = {t.task: draw_order(t, seed, split_size, settings.pool) for t in specs}
    budget = min([settings.max_documents] + [len(o) for o in orders.values()])
    looks = Looks(orders, {t.task: headline_metric(t) for t in specs}, settings, budget, baseline, rivals, log)
    started = time.perf_counter()
    done, samples, result = load_rounds(checkpoint, orders, budget)
    resumed = done
    if resumed:
        log(f"@@evalq until_decided resumed at n={done}/{budget} from {checkpoint}")
    stop = looks.look(samples, done) if done else None
    while stop is None and done < budget:
        k = min(settings.step, budget - done)
        got = evaluate(round_suites(suites, {t: o[done : done + k] for t, o in orders.items()}, first=not done))
        for task, records in got.pop("samples").items():
            samples.setdefault(task, []).extend(records)
        result = _merge(result, got)
        done += k
        save_rounds(checkpoint, orders, done, samples, result)
        stop = looks.look(samples, done)
        if stop is None and settings.max_seconds and time.perf_counter() - started > settings.max_seconds:
            stop = "max_seconds"
    _close(result, samples, orders, done)
    questions = looks.answers()
    result["until_decided"] = {"documents": done, "budget": budget, "stop": stop or "budget", "seed": seed, "resumed_at": resumed,
                               "order": {t: o[:done] for t, o in orders.items()},
                               "sequential": looks.verdict.as_dict() if looks.verdict is not None else None,
                               **({"equal_cost": {k: q.as_dict() for k, q in questions.items()}} if questions else {})}
    return result


def _close(result: dict[str, Any], samples: dict[str, list[dict[str, Any]]], orders: dict[str, list[int]], done: int) -> None:
    """The result over the documents evaluated: its samples, the metrics recomputed from them,
    and lm-eval's own results and sample counts made to say the same."""
    result["samples"] = samples
    result["metrics"] = recompute_metrics(samples, result["metrics"], set(orders))
    result["n_samples"] = (result.get("n_samples") or {}) | {t: {"original": len(o), "effective": done} for t, o in orders.items()}
    raw = result.get("lm_eval") or {}
    for task in orders:
        metrics = result["metrics"].get(task, {})
        raw.setdefault("results", {}).setdefault(task, {}).update(
            {f"{name},none": v for name, v in metrics.items() if name != "num_fewshot" and "," not in name})
    raw["n-samples"] = result["n_samples"]


def save_rounds(path: Path | None, orders: dict[str, list[int]], done: int, samples: dict[str, list[dict[str, Any]]],
                result: dict[str, Any]) -> None:
    """The rounds so far, written whole then renamed: a run killed while writing leaves the previous round's."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        json.dump({"done": done, "order": {t: o[:done] for t, o in orders.items()}, "samples": samples, "result": result},
                  fh, default=str)
    os.replace(tmp, path)


def load_rounds(path: Path | None, orders: dict[str, list[int]], budget: int) -> tuple[int, dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """(documents per task, records, evaluate()'s answer) saved by an earlier run of this cell in
    this order, cut to `budget`; nothing when there is none or it was drawn otherwise."""
    if path is None or not path.exists():
        return 0, {}, {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return 0, {}, {}  # a damaged checkpoint: start over rather than trust part of it
    done = min(int(saved["done"]), budget)
    if set(saved["order"]) != set(orders) or any(saved["order"][t][:done] != o[:done] for t, o in orders.items()):
        return 0, {}, {}
    keep = {t: {str(d) for d in o[:done]} for t, o in orders.items()}
    samples = {t: [r for r in records if t not in keep or str(r.get("doc_id")) in keep[t]] for t, records in saved["samples"].items()}
    return done, samples, saved["result"]


def _merge(into: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """One round's evaluate() answer folded into the earlier rounds': lm-eval's raw result
    is kept from the first round (configs, versions), its figures replaced at the end."""
    if not into:
        return got
    into["metrics"] = into["metrics"] | got["metrics"]
    return into
