"""The one place that says which number stands for a task: its headline metric
(declared by the suite: acc_norm for ARC and HellaSwag, exact_match with
strict-match for GSM8K…) and the suite average built from those.

Results, answer flips, the comparison engine and the leaderboard all read a
cell's headlines from here, so a flip, a verdict and a table cell always speak
of the same metric.
"""
from __future__ import annotations

from typing import Any, Iterable

# The metric shown for a task whose suite declares none (rows stored before
# suites declared them): accuracy for multiple choice, word perplexity for
# rolling-loglikelihood tasks.
HEADLINE_METRICS = ("acc", "exact_match", "mc2", "word_perplexity")
PERPLEXITY_METRIC = "word_perplexity"

Headline = tuple[str, float, "float | None"]  # metric, value, stderr
DocKey = tuple[str, str]  # (lm-eval doc id, doc hash); for a group, the leaf task is in the id


def headline(task_metrics: dict[str, Any], metric: str | None = None) -> Headline | None:
    """A task's headline: the suite's declared metric ("acc_norm", "exact_match,strict-match"),
    else the first of HEADLINE_METRICS the task reports."""
    for name in (metric,) if metric else HEADLINE_METRICS:
        if isinstance(task_metrics.get(name), (int, float)):
            base, _, filt = name.partition(",")
            stderr = task_metrics.get(f"{base}_stderr,{filt}" if filt else f"{base}_stderr")
            return name, task_metrics[name], stderr if isinstance(stderr, (int, float)) and stderr == stderr else None
    return None


def suite_tasks(cell: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(task, declared headline metric) of a stored cell's suites, in suite order:
    the tasks a row shows. A group's subtasks (MMLU's subjects) stay in the
    metrics, collapsed into the group's own score."""
    return list(dict.fromkeys((t["task"], t.get("metric")) for s in cell.get("suites") or [] for t in s.get("tasks") or []))


def headlines(metrics: dict[str, Any], cell: dict[str, Any] | None) -> dict[str, Headline]:
    """task → headline, for the suite's tasks (every stored task where the cell names no suites)."""
    tasks = suite_tasks(cell or {}) or [(t, None) for t in sorted(metrics)]
    return {t: h for t, m in tasks if (h := headline(metrics.get(t) or {}, m))}


def row_headlines(row: Any) -> dict[str, Headline]:
    """A stored row's headlines, worked out once per stored value (pairing, results and the
    leaderboard each ask for every row)."""
    cached = row.__dict__.get("_headlines")
    if cached is None or cached[0] is not row.metrics or cached[1] is not row.cell:
        cached = (row.metrics, row.cell, headlines(row.metrics or {}, row.cell))
        row.__dict__["_headlines"] = cached
    return cached[2]


def accuracy_metrics(row: Any) -> dict[str, str]:
    """task → headline metric of a stored row's accuracy-like tasks (perplexities left out):
    what answer flips and comparisons are counted by."""
    return {t: h[0] for t, h in row_headlines(row).items() if h[0] != PERPLEXITY_METRIC}


def suite_average(scores: dict[str, Headline]) -> tuple[float, float | None] | None:
    """The mean of the accuracy-like headlines (perplexities left out), as the Open LLM
    Leaderboard v1 averages its six; its stderr combines the tasks' as independent."""
    accs = [h for h in scores.values() if h[0] != PERPLEXITY_METRIC]
    if not accs:
        return None
    ses = [h[2] for h in accs]
    se = (sum(x * x for x in ses) ** 0.5) / len(ses) if all(x is not None for x in ses) else None
    return sum(h[1] for h in accs) / len(accs), se


def document_scores(samples: Iterable[dict[str, Any]], metric: str, prefix: str = "") -> dict[DocKey, float]:
    """Per-document values of a headline metric from lm-eval's per-sample records.
    A filtered metric ("exact_match,strict-match") reads only that filter's records."""
    name, _, filt = metric.partition(",")
    out: dict[DocKey, float] = {}
    for s in samples:
        if filt and s.get("filter") not in (filt, None):
            continue
        value = s.get(name)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)):
            out[(f"{prefix}{s.get('doc_id')}", str(s.get("doc_hash")))] = float(value)
    return out
