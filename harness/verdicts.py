"""One comparison engine: two cells that scored the same documents, compared
document by document.

Every place that says "A is better than B" (a quantized cell against its fp16,
a big model quantized against a small one at full precision, one night against
the last) asks this module. For each task the two cells' per-document headline
scores are matched by (document id, document hash), as the answer flips are;
documents only one side scored are left out and counted. Then:

- the difference of the task means, with a 95 % interval from a paired
  bootstrap over documents (seeded; seed and resample count are part of the
  answer) and a p-value: exact McNemar where the scores are 0/1, else the
  bootstrap's;
- the suite's difference (the mean of its task headlines, as the suite average
  is defined), bootstrapped stratified by task: each task's documents resampled
  within the task;
- recovery (A's suite score / B's) with its interval, and the gates MLPerf
  judges quantized submissions by (99 %, 99.9 %);
- where nothing is significant, the minimum detectable effect at this sample
  size (80 % power).

One task's bootstrap draws exactly what `scipy.stats.bootstrap(..., paired=True,
method="percentile", batch=BATCH)` draws from a Generator with the same seed
(tests/unit/test_verdicts.py holds the two side by side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable

import numpy as np

from evalq import sequential
from evalq.backends.base import BASELINE_VARIANT
from evalq.headlines import DocKey, accuracy_metrics, document_scores
from evalq.sequential import Sequential

ALPHA = 0.05
RESAMPLES = 9_999  # scipy.stats.bootstrap's default
BATCH = 500  # resamples drawn per call: bounds memory on large tasks (MMLU: 14,042 documents)
SEED = 20261202
POWER = 0.80
GATES = (0.99, 0.999)



def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (a binomial
    test of b against Bin(b + c, 1/2)); exact integer arithmetic."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def cell_scores(row: Any, samples: Callable[[str, str], list[dict[str, Any]]], tasks: list[tuple[str, str]]) -> dict[str, dict[DocKey, float]]:
    """task → per-document headline scores of one stored cell; a group (MMLU) pools
    its leaf tasks' documents, as lm-eval's size-weighted group mean does."""
    groups = ((row.result or {}).get("lm_eval") or {}).get("group_subtasks") or {}
    out = {}
    for task, metric in tasks:
        leaves = groups.get(task) or [task]
        scores: dict[DocKey, float] = {}
        for leaf in leaves:
            scores.update(document_scores(samples(row.key, leaf), metric, prefix=f"{leaf}/" if leaf != task else ""))
        out[task] = scores
    return out


@dataclass
class Difference:
    """A − B on the documents both scored: means, difference, its interval and p."""

    n: int
    a: float
    b: float
    lo: float
    hi: float
    p: float
    mde: float | None  # the smallest difference 80 % power would detect here (None: no variation at all)
    recovery: float | None = None  # a / b
    recovery_lo: float | None = None
    recovery_hi: float | None = None

    @property
    def diff(self) -> float:
        return self.a - self.b

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "a": self.a, "b": self.b, "diff": self.diff, "lo": self.lo, "hi": self.hi, "p": self.p,
                "mde": self.mde, "recovery": self.recovery, "recovery_lo": self.recovery_lo, "recovery_hi": self.recovery_hi}


@dataclass
class Comparison:
    tasks: dict[str, Difference] = field(default_factory=dict)
    suite: Difference | None = None
    unpaired: int = 0  # documents only one side scored
    reason: str | None = None  # why the two cells cannot be compared
    # eval.until_decided: the confidence sequence's verdict on the documents in draw order
    # (evalq.sequential); where present, it is what the gates say
    sequential: Sequential | None = None
    stop: str | None = None  # why the cell stopped: decided, budget, max_seconds, baseline
    # eval.until_decided.compare: the sequence's answer to this pair's equal-cost question, where a asked it of b
    equal_cost: sequential.EqualCost | None = None
    alpha: float = ALPHA
    seed: int = SEED
    resamples: int = RESAMPLES

    @property
    def comparable(self) -> bool:
        return self.suite is not None

    def gate(self, gate: float) -> str:
        """Recovery gate: passes when the interval's lower end clears it, fails when its upper end is below."""
        if self.sequential is not None and f"{gate:g}" in self.sequential.gates:
            return sequential_gate(self.sequential, gate)
        s = self.suite
        if s is None or s.recovery_lo is None or s.recovery_hi is None:
            return "not comparable"
        if s.recovery_lo >= gate:
            return "passes"
        if s.recovery_hi < gate:
            return "fails"
        return f"undetermined at n = {s.n:,}"

    def as_dict(self) -> dict[str, Any]:
        return {"tasks": {t: d.as_dict() for t, d in self.tasks.items()}, "suite": self.suite.as_dict() if self.suite else None,
                "unpaired": self.unpaired, "reason": self.reason, "alpha": self.alpha, "seed": self.seed,
                "resamples": self.resamples, "gates": {f"{g:g}": self.gate(g) for g in GATES},
                **({"sequential": self.sequential.as_dict() | {"stop": self.stop}} if self.sequential else {}),
                **({"equal_cost": self.equal_cost.as_dict()} if self.equal_cost else {})}


def sequential_gate(seq: Sequential, gate: float) -> str:
    """A gate's verdict from the confidence sequence: at how many documents it was decided,
    or how many more a fixed design would still need."""
    r = seq.gates[f"{gate:g}"]
    if r.verdict != "undecided":
        return f"{r.verdict} (decided after {r.decided_at:,} documents a task)"
    if r.more_needed == 0:  # the spread seen so far says a fixed-n test of this size would decide
        return f"undecided at n = {seq.n:,} a task; a fixed design of this size would decide, the sequence needs more"
    more = f"; about {r.more_needed:,} more a task needed" if r.more_needed is not None else ""
    return f"undecided at n = {seq.n:,} a task{more}"


def until_decided(row: Any) -> dict[str, Any]:
    """What a stored until-decided cell recorded of its run ({} for any other row)."""
    return getattr(getattr(row, "outcome", None), "until_decided", None) or {}


def sequential_verdict(row: Any, base: Any, mine: dict[str, dict[DocKey, float]],
                       theirs: dict[str, dict[DocKey, float]]) -> Sequential | None:
    """The confidence sequence over a stored until-decided cell's documents in its draw
    order, paired with its baseline's scores: recomputed from what is stored, not trusted."""
    stored = until_decided(row)
    settings = ((getattr(row, "cell", None) or {}).get("eval") or {}).get("until_decided")
    if not stored.get("order") or not settings:
        return None
    x, y = stored_rounds(stored, mine, theirs)
    if not len(x):
        return None
    gates = tuple(sorted(set(settings.get("gates") or [0.99]) | set(GATES)))
    return sequential.verdict(x, y, gates, settings.get("alpha", sequential.ALPHA))


def stored_rounds(stored: dict[str, Any], mine: dict[str, dict[DocKey, float]],
                  theirs: dict[str, dict[DocKey, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, tasks) scores of both sides in a stored until-decided cell's draw order."""
    from evalq.measure.until_decided import paired_rounds

    by_id = lambda scores: {t: {doc: v for (doc, _), v in s.items()} for t, s in scores.items()}  # noqa: E731
    return paired_rounds(stored["order"], stored["documents"], by_id(mine), by_id(theirs))


def question_of(row: Any, other: Any) -> Any:
    """The equal-cost question (eval.until_decided.compare) `row`'s matrix asked of its cells
    against `other`'s fp16 cell, as stored settings, or None."""
    settings = ((getattr(row, "cell", None) or {}).get("eval") or {}).get("until_decided") or {}
    if getattr(other, "variant", None) != BASELINE_VARIANT or getattr(row, "variant", None) == BASELINE_VARIANT:
        return None
    return next((q for q in settings.get("compare") or [] if q["model"] == row.model and q["against"] == other.model), None)


def equal_cost_verdict(row: Any, other: Any, mine: dict[str, dict[DocKey, float]],
                       theirs: dict[str, dict[DocKey, float]]) -> sequential.EqualCost | None:
    """The sequence's answer to the equal-cost question `row` asked of `other`, recomputed
    from the stored documents in `row`'s draw order (None where no question was asked)."""
    question, stored = question_of(row, other), until_decided(row)
    if question is None or not stored.get("order"):
        return None
    x, y = stored_rounds(stored, mine, theirs)
    settings = row.cell["eval"]["until_decided"]
    return sequential.equal_cost(x, y, other.model, question["margin"], settings.get("alpha", sequential.ALPHA)) if len(x) else None


def _z(power_or_quantile: float) -> float:
    return NormalDist().inv_cdf(power_or_quantile)


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _bootstrap_p(values: np.ndarray) -> float:
    """Two-sided: the smallest α whose percentile interval leaves out 0."""
    return float(min(1.0, 2 * min(np.mean(values <= 0), np.mean(values >= 0))))


def _binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def compare_documents(a: dict[str, dict[DocKey, float]], b: dict[str, dict[DocKey, float]], alpha: float = ALPHA,
            seed: int = SEED, resamples: int = RESAMPLES) -> Comparison:
    """A against B, task by task and over the suite (the tasks of `a`)."""
    out = Comparison(alpha=alpha, seed=seed, resamples=resamples)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task, scores in a.items():
        other = b.get(task) or {}
        shared = sorted(scores.keys() & other.keys())
        out.unpaired += len(scores.keys() ^ other.keys())
        if not shared:
            out.reason = f"no document of {task} scored by both" if other else f"{task} scored by one side only"
            return out
        pairs[task] = (np.array([scores[k] for k in shared]), np.array([other[k] for k in shared]))
    if not pairs:
        out.reason = "no task to compare"
        return out

    rng = np.random.default_rng(seed)
    means = {t: (np.empty(resamples), np.empty(resamples)) for t in pairs}
    for lo in range(0, resamples, BATCH):
        size = min(BATCH, resamples - lo)
        for task, (x, y) in pairs.items():
            idx = rng.integers(0, len(x), (size, len(x)))
            means[task][0][lo : lo + size] = x[idx].mean(axis=1)
            means[task][1][lo : lo + size] = y[idx].mean(axis=1)

    z = _z(1 - alpha / 2) + _z(POWER)
    for task, (x, y) in pairs.items():
        d = means[task][0] - means[task][1]
        lo_, hi_ = _percentile_interval(d, alpha)
        if _binary(x) and _binary(y):
            p = mcnemar_exact(int(np.sum((y == 1) & (x == 0))), int(np.sum((x == 1) & (y == 0))))
        else:
            p = _bootstrap_p(d)
        sd = float(np.std(x - y, ddof=1)) if len(x) > 1 else 0.0
        out.tasks[task] = Difference(len(x), float(x.mean()), float(y.mean()), lo_, hi_, p,
                                     z * sd / math.sqrt(len(x)) if sd > 0 else None, *_recovery(x.mean(), y.mean(), means[task], alpha))

    suite_a = np.mean([means[t][0] for t in pairs], axis=0)
    suite_b = np.mean([means[t][1] for t in pairs], axis=0)
    d = suite_a - suite_b
    lo_, hi_ = _percentile_interval(d, alpha)
    point_a = float(np.mean([x.mean() for x, _ in pairs.values()]))
    point_b = float(np.mean([y.mean() for _, y in pairs.values()]))
    se = float(np.std(d, ddof=1))
    out.suite = Difference(sum(len(x) for x, _ in pairs.values()), point_a, point_b, lo_, hi_, _bootstrap_p(d),
                           z * se if se > 0 else None, *_recovery(point_a, point_b, (suite_a, suite_b), alpha))
    return out


def _recovery(a: float, b: float, resampled: tuple[np.ndarray, np.ndarray], alpha: float) -> tuple[float | None, float | None, float | None]:
    ra, rb = resampled
    if b <= 0 or np.any(rb <= 0):
        return None, None, None
    lo, hi = _percentile_interval(ra / rb, alpha)
    return float(a / b), lo, hi


class Judge:
    """Compares stored cells (anything with a `key`), reading each cell's
    per-document headline scores once: `Judge(rows, store.sample_loader())(a, b)`."""

    def __init__(self, rows: list[Any], samples: Callable[[str, str], list[dict[str, Any]]] | None,
                 alpha: float = ALPHA, seed: int = SEED, resamples: int = RESAMPLES):
        self.rows = {r.key: r for r in rows}
        self.samples = samples
        self.alpha, self.seed, self.resamples = alpha, seed, resamples
        self._scores: dict[str, dict[str, dict[DocKey, float]]] = {}

    def scores(self, key: str) -> dict[str, dict[DocKey, float]]:
        if key not in self._scores:
            row = self.rows[key]
            tasks = list(accuracy_metrics(row).items())
            self._scores[key] = cell_scores(row, self.samples, tasks) if self.samples else {}
        return self._scores[key]

    def __call__(self, a: Any, b: Any) -> Comparison:
        sa, sb = self.scores(a.key), self.scores(b.key)
        missing = [x for x, scores in ((a, sa), (b, sb)) if not any(scores.values())]
        if missing:
            return Comparison(reason="no per-document records stored for " + " and ".join(f"{x.model} {x.variant}" for x in missing),
                              alpha=self.alpha, seed=self.seed, resamples=self.resamples)
        out = compare_documents(sa, sb, self.alpha, self.seed, self.resamples)
        out.sequential = sequential_verdict(a, b, sa, sb)
        out.stop = until_decided(a).get("stop") if out.sequential else None
        out.equal_cost = equal_cost_verdict(self.rows.get(a.key, a), self.rows.get(b.key, b), sa, sb)  # the stored rows: their cells
        return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: each p-value as it must be read when all of
    them are claimed at once (significant where the adjusted p < α)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
