"""Each quantized cell against the fp16 cell of the same model: answer flips on
multiple-choice tasks (from lm-eval's per-sample records), the footprint
ratio, and the sanity flags of a quantization that did not happen or broke.

Pure functions of stored rows: `evalq results` and the leaderboard both call
`pair_rows`. (Token-level KLD is measured by the worker, see measure/quality.py.)
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from evalq.backends.base import BASELINE_VARIANT
from evalq.verdicts import Comparison, Judge, holm, mcnemar_exact
from evalq.outcome import Quality
from evalq.headlines import accuracy_metrics

# A quantization that moves perplexity or the next-token distribution more than
# this is broken rather than lossy (a wrong kernel, a CPU path computing garbage:
# one llama.cpp build's AMX path gave perplexity 454 where ~23 is right), keyed
# by bits per weight. Loose on purpose: 135M-parameter models lose the most
# (SmolLM2 measured: int8 KLD 0.016, nf4 0.23, gguf-q4_k_m 0.05).
PLAUSIBLE_PPL_RATIO = {16: 1.05, 8: 1.2, 6: 1.3, 5: 1.5, 4: 2.0}
DEFAULT_PLAUSIBLE_PPL_RATIO = 3.0
PLAUSIBLE_KLD = {16: 0.01, 8: 0.1, 6: 0.2, 5: 0.5, 4: 1.0}  # mean KL divergence to fp16, nats
DEFAULT_PLAUSIBLE_KLD = 2.0

_signatures: dict[tuple, str] = {}


def group_signature(cell: dict[str, Any]) -> str:
    """Suites with their tasks, shots and limits, and the hardware class: rows are
    comparable only within one group."""
    key = (tuple((s["name"], tuple((t["task"], t["num_fewshot"], t.get("limit")) for t in s["tasks"]))
                 for s in cell.get("suites", [])), (cell.get("eval") or {}).get("limit"), cell.get("hardware"))
    if key not in _signatures:  # thousands of rows share a handful of signatures
        _signatures[key] = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:10]
    return _signatures[key]


def _softmax(lls: list[float]) -> list[float]:
    top = max(lls)
    e = [math.exp(x - top) for x in lls]
    s = sum(e)
    return [x / s for x in e]


def choice_kld(base_lls: list[float], lls: list[float]) -> float:
    """KL(base‖variant) of the distributions over the answer choices that the
    logged log-likelihoods imply."""
    p, q = _softmax(base_lls), _softmax(lls)
    return max(0.0, sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0))


def mc_answers(samples: Iterable[dict[str, Any]], metric: str = "acc") -> dict[tuple[str, str], tuple[bool, list[float]]]:
    """(doc id, doc hash) → (answered correctly by `metric`, log-likelihood of each choice),
    for multiple-choice records only (those with the metric and one score per choice).
    The metric is the task's headline (acc_norm for ARC and HellaSwag), so that the
    flips explain the headline's change exactly."""
    out = {}
    for s in samples:
        resps = s.get("filtered_resps")
        value = s.get(metric, s.get("acc"))
        if not isinstance(value, (int, float)) or not isinstance(resps, list) or not resps:
            continue
        if not all(isinstance(r, list) and r and isinstance(r[0], (int, float)) for r in resps):
            continue
        out[(str(s.get("doc_id")), str(s.get("doc_hash")))] = (value >= 0.5, [float(r[0]) for r in resps])
    return out


@dataclass
class Flips:
    n: int = 0  # documents answered by both
    correct_to_wrong: int = 0
    wrong_to_correct: int = 0
    unpaired: int = 0  # documents only one side answered (a changed task or limit)
    kld_sum: float = 0.0

    @property
    def flips(self) -> int:
        return self.correct_to_wrong + self.wrong_to_correct

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.n if self.n else None

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_exact(self.correct_to_wrong, self.wrong_to_correct)

    @property
    def choice_kld(self) -> float | None:
        return self.kld_sum / self.n if self.n else None

    def add(self, other: Flips) -> None:
        self.n += other.n
        self.correct_to_wrong += other.correct_to_wrong
        self.wrong_to_correct += other.wrong_to_correct
        self.unpaired += other.unpaired
        self.kld_sum += other.kld_sum

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "correct_to_wrong": self.correct_to_wrong, "wrong_to_correct": self.wrong_to_correct,
                "flips": self.flips, "flip_rate": self.flip_rate, "mcnemar_p": self.mcnemar_p,
                "choice_kld": self.choice_kld, "unpaired": self.unpaired}


def flips(base: dict[tuple[str, str], tuple[bool, list[float]]], other: dict[tuple[str, str], tuple[bool, list[float]]]) -> Flips:
    f = Flips(unpaired=len(base.keys() ^ other.keys()))
    # sorted: a set's order follows the string hash seed, and a float sum follows the order
    for key in sorted(base.keys() & other.keys()):
        (b_ok, b_lls), (o_ok, o_lls) = base[key], other[key]
        f.n += 1
        f.correct_to_wrong += b_ok and not o_ok
        f.wrong_to_correct += o_ok and not b_ok
        if len(b_lls) == len(o_lls):
            f.kld_sum += choice_kld(b_lls, o_lls)
    return f


@dataclass
class Paired:
    """One cell against its model's fp16 cell."""

    baseline_key: str | None
    group: str = ""  # the group signature (suites, hardware) the two rows share
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    total: dict[str, Any] | None = None
    weights_ratio: float | None = None
    flags: list[str] = field(default_factory=list)
    # the comparison engine's answer (difference, interval, recovery, gates) against fp16
    comparison: Comparison | None = None
    p_adjusted: float | None = None  # the suite difference's p, Holm-adjusted over every row compared with it
    floor: dict[str, Any] | None = None  # the baseline's own noise floor (measure/quality.noise_floor)
    # eval.until_decided.compare: per other model, the sequence's answer against its fp16 row
    equal_cost: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        vs = None
        if self.comparison is not None:
            vs = self.comparison.as_dict() | {"p_adjusted": self.p_adjusted}
        return {"baseline_key": self.baseline_key, "group": self.group, "tasks": self.tasks, "total": self.total,
                "weights_ratio": self.weights_ratio, "flags": self.flags, "vs_fp16": vs, "floor": self.floor,
                **({"equal_cost": self.equal_cost} if self.equal_cost else {})}


def sanity_flags(row: Any, base: Any | None) -> list[str]:
    """Evidence that a 'quantized' cell is not really quantized, or is broken."""
    if row.variant == BASELINE_VARIANT or row.status != "ok":
        return []
    outcome = row.outcome
    details = outcome.details
    quality = outcome.quality or Quality()
    flags = list(outcome.warnings)
    if (details.get("bits") or 0) >= 16:  # a 16-bit GGUF: nothing to quantize, only to compute right
        return flags + _implausible(details, quality)
    if details.get("quantized_modules") == 0:
        flags.append("no quantized module in the loaded model")
    if base is not None and base.weights_bytes and row.weights_bytes and row.weights_bytes >= base.weights_bytes:
        flags.append(f"weights footprint {row.weights_bytes / base.weights_bytes:.2f}× fp16's: not quantized?")
    if quality.kld_mean == 0:
        flags.append("KL divergence to fp16 is exactly 0: the same numbers as fp16")
    return flags + _implausible(details, quality)


def _implausible(details: dict[str, Any], quality: Quality) -> list[str]:
    """Perplexity or KLD beyond what the bits allow: computed wrong, not merely lossy."""
    flags = []
    bits = details.get("bits")
    ratio = quality.ppl_ratio
    limit = PLAUSIBLE_PPL_RATIO.get(bits, DEFAULT_PLAUSIBLE_PPL_RATIO)
    if ratio and ratio > limit:
        flags.append(f"perplexity {ratio:.2f}× fp16's, beyond the {limit}× a {bits or '?'}-bit "
                     f"quantization allows: a broken kernel or backend?{_cpu_hint(details)}")
    kld = quality.kld_mean
    kld_limit = PLAUSIBLE_KLD.get(bits, DEFAULT_PLAUSIBLE_KLD)
    if kld and kld > kld_limit:
        flags.append(f"KL divergence to fp16 {kld:.3g}, beyond the {kld_limit} a {bits or '?'}-bit "
                     f"quantization allows: a broken kernel or backend?{_cpu_hint(details)}")
    return flags


def _cpu_hint(details: dict[str, Any]) -> str:
    features = details.get("cpu_features")
    if not features or details.get("n_gpu_layers"):
        return ""
    return " (llama.cpp CPU build: see docs/variants.md, Choosing llama.cpp's CPU backend)"


def fp16_slots(rows: list[Any], group: dict[str, str]) -> dict[tuple[str, str, str], Any]:
    """(matrix, model, group) → the ok fp16 row there."""
    return {(r.matrix, r.model, group[r.key]): r for r in rows if r.variant == BASELINE_VARIANT and r.status == "ok"}


def baselines(rows: list[Any], group: dict[str, str] | None = None,
              fp16_of: dict[tuple[str, str, str], Any] | None = None) -> dict[str, Any]:
    """The one baseline finder: each row's key → the row it is compared against,
    the ok fp16 row of the same matrix, model, suites and hardware (absent: no baseline)."""
    group = group if group is not None else {r.key: group_signature(r.cell or {}) for r in rows}
    fp16_of = fp16_of if fp16_of is not None else fp16_slots(rows, group)
    return {r.key: fp16_of[slot] for r in rows if (slot := (r.matrix, r.model, group[r.key])) in fp16_of}


def fp16_rivals(row: Any, fp16_of: dict[tuple[str, str, str], Any], group: dict[str, str]) -> list[Any]:
    """The ok fp16 rows of other models (same matrix, suites, hardware) that `row`'s
    matrix asked an equal-cost question of (eval.until_decided.compare). `fp16_of`:
    (matrix, model, group) → that model's ok fp16 row; looked up, never scanned (the
    scan over every row for every row took 100 s of a 10,000-cell board)."""
    if row.status != "ok" or row.variant == BASELINE_VARIANT:
        return []
    settings = ((row.cell or {}).get("eval") or {}).get("until_decided") or {}
    found = (fp16_of.get((row.matrix, q["against"], group[row.key])) for q in settings.get("compare") or []
             if q["model"] == row.model and q["against"] != row.model)
    return [r for r in found if r is not None]


def pair_rows(rows: list[Any], samples: Callable[[str, str], list[dict[str, Any]]], judge: Judge | None = None) -> dict[str, Paired]:
    """Every row's comparison with its model's fp16 row of the same matrix and
    suites: answer flips, and the comparison engine's difference, recovery and
    gates, their p-values Holm-adjusted over all the rows compared here."""
    group = {r.key: group_signature(r.cell or {}) for r in rows}
    fp16_of = fp16_slots(rows, group)
    base_of = baselines(rows, group, fp16_of)
    judge = judge or Judge(rows, samples)
    answers: dict[tuple[str, str], dict] = {}

    def mc(row: Any, task: str) -> dict:
        if (row.key, task) not in answers:
            metric = accuracy_metrics(row).get(task, "acc")
            answers[(row.key, task)] = mc_answers(samples(row.key, task), metric.partition(",")[0])
        return answers[(row.key, task)]

    out = {}
    for r in rows:
        base = base_of.get(r.key)
        paired = Paired(base.key if base else None, group[r.key], flags=sanity_flags(r, base))
        if base is not None:
            paired.floor = base.outcome.quality.floor if base.outcome.quality else None
        if base is not None and r.status == "ok" and r is not base:
            if base.weights_bytes and r.weights_bytes:
                paired.weights_ratio = r.weights_bytes / base.weights_bytes
            total = Flips()
            for task in sorted(set(r.metrics or {}) & set(base.metrics or {})):
                mine, theirs = mc(r, task), mc(base, task)
                if mine and theirs:
                    f = flips(theirs, mine)
                    paired.tasks[task] = f.as_dict()
                    total.add(f)
            paired.total = total.as_dict() if total.n else None
            paired.comparison = judge(r, base)
        for other in fp16_rivals(r, fp16_of, group):
            answer = judge(r, other).equal_cost
            if answer is not None:
                paired.equal_cost[other.model] = answer.as_dict()
        out[r.key] = paired
    compared = [p for p in out.values() if p.comparison is not None and p.comparison.suite is not None]
    for p, adjusted in zip(compared, holm([p.comparison.suite.p for p in compared])):
        p.p_adjusted = adjusted
    return out
