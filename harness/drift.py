"""Did a cell's numbers move between two nights by more than their noise?

Pure functions: `figures_of` turns a results record into the figures a night
keeps (each with what its noise is measured by), `compare` judges tonight's
figures against the previous night's. The tests, per kind of figure:

- accuracy: paired where both cells left lm-eval's per-sample records, by the
  comparison engine (evalq.verdicts: the figure's own metric, document by
  document; exact McNemar, and the difference's interval), else the difference
  against the combined standard error of the two scores;
- perplexity of the quality slice: ln PPL against the combined standard error
  of the two mean token log-losses; KLD and same-top-1: combined standard error;
- speed: an exact rank test (Mann–Whitney) on the two nights' repeats, and a
  change of at least SPEED_FLOOR; with too few repeats to reach alpha (fewer
  than 5 a night at 0.01) speed is listed as not judged, never alerted on;
- memory: the weights footprint is exact (any byte is a change); the peak by
  more than MEMORY_TOLERANCE.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable

from evalq.backends.base import BASELINE_VARIANT
from evalq.cell import key_difference
from evalq.outcome import Quality
from evalq.record import CellRecord
from evalq.verdicts import Difference, compare_documents, document_scores

DEFAULT_ALPHA = 0.01  # a nightly alert wakes someone: one false alarm per 100 judged figures at most
SPEED_FLOOR = 0.05
MEMORY_TOLERANCE = 0.05
LOWER_IS_BETTER = {"word_perplexity", "perplexity", "bits_per_byte", "byte_perplexity"}


def _metric(value: Any, better: str, test: str, **noise: Any) -> dict[str, Any]:
    return {"value": value, "better": better, "test": test, **{k: v for k, v in noise.items() if v is not None}}


def figures_of(rec: CellRecord) -> dict[str, Any]:
    """What a night keeps of one cell: its status and each judged figure."""
    figs: dict[str, dict[str, Any]] = {}
    for task, h in rec.headline.items():
        figs[f"{task}:{h.metric}"] = _metric(h.value, "lower" if h.metric in LOWER_IS_BETTER else "higher",
                                             "accuracy", stderr=h.stderr, task=task)
    q = rec.quality or Quality()
    if q.ppl:
        figs["text_ppl"] = _metric(q.ppl, "lower", "log_stderr", stderr=getattr(q, "nll_stderr", None))
    if rec.variant != BASELINE_VARIANT and q.kld_mean is not None:
        figs["kld_mean"] = _metric(q.kld_mean, "lower", "stderr", stderr=getattr(q, "kld_stderr", None))
        figs["same_top1"] = _metric(q.same_top1, "higher", "stderr", stderr=getattr(q, "same_top1_stderr", None))
    for batch, s in sorted((rec.speed_by_batch or {}).items(), key=lambda kv: int(kv[0])):
        figs[f"decode_tokens_per_s@b{batch}"] = _metric(s.get("decode_tokens_per_s"), "higher", "runs",
                                                        runs=s.get("decode_tokens_per_s_runs"))
        if batch == "1":
            figs["ttft_ms@b1"] = _metric(s.get("ttft_ms"), "lower", "runs", runs=s.get("ttft_ms_runs"))
    if rec.weights_bytes:
        figs["weights_bytes"] = _metric(rec.weights_bytes, "lower", "exact")
    if rec.peak_memory_bytes:
        figs["peak_memory_bytes"] = _metric(rec.peak_memory_bytes, "lower", "tolerance")
    return {"key": rec.key, "status": rec.status, "error": rec.error, "speed_threads": rec.speed_threads, "metrics": figs}


@dataclass
class Change:
    metric: str
    before: float
    after: float
    verdict: str  # regression | improvement
    test: str  # how its noise was judged, in words
    p: float | None = None

    def as_dict(self) -> dict[str, Any]:
        rel = (self.after - self.before) / abs(self.before) if self.before else None
        return {"metric": self.metric, "before": self.before, "after": self.after, "relative": rel,
                "verdict": self.verdict, "test": self.test, "p": self.p}


@dataclass
class CellDrift:
    model: str
    variant: str
    key_before: str | None
    key_after: str | None
    reran: bool
    why: list[str] = field(default_factory=list)  # what changed in the cell's key
    status: str = "unchanged"  # new gone unchanged changed improvement regression failing fixed running
    changes: list[Change] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def alert(self) -> bool:
        return self.status in ("regression", "failing") or bool(self.regressions)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "key_before": self.key_before, "key_after": self.key_after,
                "reran": self.reran, "why": self.why, "status": self.status, "error": self.error,
                "changes": [c.as_dict() for c in self.changes], "unjudged": self.unjudged}


def rank_test_p(a: list[float], b: list[float]) -> float:
    """Two-sided exact Mann–Whitney (Wilcoxon rank-sum) p-value of two small samples
    of repeats, by enumerating every way to split the pooled ranks (midranks for ties);
    the normal approximation above 200,000 splits."""
    pooled = sorted(a + b)
    rank = {}
    for v in set(pooled):
        first = pooled.index(v)
        rank[v] = first + (pooled.count(v) + 1) / 2
    ranks = [rank[v] for v in a + b]
    n1, n2 = len(a), len(b)
    observed = sum(ranks[:n1])
    splits = math.comb(n1 + n2, n1)
    if splits > 200_000:
        sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
        return _two_sided((observed - n1 * (n1 + n2 + 1) / 2) / sd) if sd else 1.0
    sums = [sum(pick) for pick in itertools.combinations(ranks, n1)]
    upper = sum(1 for x in sums if x >= observed - 1e-9)
    lower = sum(1 for x in sums if x <= observed + 1e-9)
    return min(1.0, 2 * min(upper, lower) / splits)  # twice the smaller tail, as scipy's mannwhitneyu


def _two_sided(z: float) -> float:
    return 2 * (1 - NormalDist().cdf(abs(z)))


def _direction(before: float, after: float, better: str) -> str:
    return "improvement" if (after > before) == (better == "higher") else "regression"


def judge_figure(name: str, a: dict[str, Any], b: dict[str, Any], alpha: float,
          paired: Callable[[str, str], Difference | None]) -> Change | str | None:
    """A Change if the figure moved beyond its noise, None if not, or a reason it cannot be judged.
    `paired(task, metric)`: the engine's tonight-minus-last-night difference on the documents both scored."""
    before, after = a.get("value"), b.get("value")
    if before is None or after is None:
        return "not measured on both nights"
    if before == after:
        return None
    better = b["better"]
    test = b["test"]
    if test == "accuracy":
        d = paired(b.get("task", ""), name.partition(":")[2])
        if d is not None:
            if d.p >= alpha:
                return None
            return Change(name, before, after, _direction(before, after, better),
                          f"paired on {d.n:,} documents: {100 * d.diff:+.1f} points ({100 * (1 - alpha):g} % CI "
                          f"{100 * d.lo:+.1f} to {100 * d.hi:+.1f}), p = {d.p:.2g}", d.p)
        test = "stderr"
    if test in ("stderr", "log_stderr"):
        sa, sb = a.get("stderr"), b.get("stderr")
        if sa is None or sb is None:
            return "no standard error on both nights"
        combined = math.hypot(sa, sb)
        delta = math.log(after / before) if test == "log_stderr" else after - before
        if combined == 0:
            return "a standard error of 0: nothing to judge a change against"
        p = _two_sided(delta / combined)
        if p >= alpha:
            return None
        what = "ln PPL" if test == "log_stderr" else "difference"
        shown = "p < 1e-15" if p < 1e-15 else f"p = {p:.2g}"
        return Change(name, before, after, _direction(before, after, better),
                      f"{what} {delta:+.4g} against combined stderr {combined:.3g}, {shown}", p)
    if test == "runs":
        ra, rb = a.get("runs") or [], b.get("runs") or []
        if 2 / math.comb(len(ra) + len(rb), len(ra)) >= alpha:
            return (f"{len(ra)} and {len(rb)} repeats: no ordering of so few can reach p < {alpha:g} "
                    f"(5 repeats a night can at 0.01)")
        p = rank_test_p(ra, rb)
        if p >= alpha or abs(after - before) < SPEED_FLOOR * abs(before):
            return None
        return Change(name, before, after, _direction(before, after, better),
                      f"repeats {min(ra):.4g}–{max(ra):.4g} → {min(rb):.4g}–{max(rb):.4g}, exact rank test p = {p:.2g}", p)
    if test == "tolerance":
        if abs(after - before) <= MEMORY_TOLERANCE * abs(before):
            return None
        return Change(name, before, after, _direction(before, after, better), f"beyond ±{MEMORY_TOLERANCE:.0%}")
    return Change(name, before, after, _direction(before, after, better), "exact: any change is real")


def compare_nights(before: dict[tuple[str, str], dict[str, Any]], after: dict[tuple[str, str], dict[str, Any]],
            reran: set[str], cell_json: Callable[[str], dict[str, Any] | None],
            samples: Callable[[str, str], list[dict[str, Any]]], alpha: float = DEFAULT_ALPHA) -> list[CellDrift]:
    """Tonight (`after`) against the previous night (`before`), by (model, variant)."""
    out = []
    for mv in sorted(set(before) | set(after)):
        a, b = before.get(mv), after.get(mv)
        drift = CellDrift(mv[0], mv[1], a and a["key"], b and b["key"], bool(b and b["key"] in reran))
        out.append(drift)
        if b is None:
            drift.status = "gone"
            continue
        drift.error = b.get("error")
        if drift.key_before != drift.key_after and a is not None:
            drift.why = key_difference(cell_json(a["key"]), cell_json(b["key"])) or ["the cell's definition changed"]
        if b["status"] == "running":  # held by another live `evalq run` on this database: not ours to judge
            drift.status = "running"
            drift.unjudged.append("still running under another evalq run: judged next night")
            continue
        if b["status"] != "ok":
            if b["status"] == "skipped":
                drift.status = "unchanged" if a is not None and a["status"] == "skipped" else "changed"
            else:
                drift.status = "regression" if a is not None and a["status"] == "ok" else "failing"
            continue
        if a is None:
            drift.status = "new"
            continue
        if a["status"] != "ok":
            drift.status = "fixed"
            continue

        def paired(task: str, metric: str, a=a, b=b) -> Difference | None:
            if a["key"] == b["key"]:
                return None
            tonight, last = (document_scores(samples(x["key"], task), metric) for x in (b, a))
            if not tonight or not last:
                return None
            return compare_documents({task: tonight}, {task: last}, alpha).tasks.get(task)

        for name in sorted(set(a["metrics"]) | set(b["metrics"])):
            ma, mb = a["metrics"].get(name), b["metrics"].get(name)
            if ma is None or mb is None:
                drift.unjudged.append(f"{name}: measured on one night only")
                continue
            verdict = judge_figure(name, ma, mb, alpha, paired)
            if isinstance(verdict, Change):
                drift.changes.append(verdict)
            elif isinstance(verdict, str) and ma.get("value") != mb.get("value"):
                drift.unjudged.append(f"{name}: {verdict}")
        if drift.regressions:
            drift.status = "regression"
        elif drift.changes:
            drift.status = "improvement"
        elif drift.key_before != drift.key_after:
            drift.status = "changed"
    return out
