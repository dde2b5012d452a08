"""Anytime-valid recovery gates: evaluate a quantized cell only until its verdict is decided.

A fixed-n interval looked at after every batch of documents, stopping at the first
look that clears the gate, says "passes" far more often than its α (each look is
another chance to be wrong). A confidence sequence holds at every n at once:
P(the true value ever leaves it) ≤ α, so stopping when it first clears the gate keeps
the error rate. scripts/sim_until_decided.py and tests/unit/test_sequential.py show
both rates on simulated runs with a known truth.

The boundary is a betting confidence sequence: Waudby-Smith & Ramdas, "Estimating
means of bounded random variables by betting" (JRSS-B 2024), the hedged capital process
of section 4 with predictable plug-in bets. For a candidate mean m a gambler bets λ_t ≥ 0
on each observation being above m (capital Π(1 + λ_t(u_t − m))) and another on it being
below (Π(1 − λ_t(u_t − m))); under the null each capital is a nonnegative
supermartingale, so by Ville's inequality it ever reaches 2/α with probability at most
α/2. m is excluded, for good, from the round one capital reaches 2/α. It needs
observations in [0, 1] with a common mean; it is exact at every n (no asymptotics) and,
on scripts/sim_until_decided.py's runs, decides with about half the documents the
empirical-Bernstein sequence of the same paper's Theorem 2 needed. A round takes the
next document of each task (the suite score is the mean of the task headlines), and for
a gate g:

    Z(g) = mean over tasks of (x − g·y)      x: the variant's score, y: its fp16 baseline's
    u(g) = (Z(g) + g) / (1 + g)              in [0, 1]; its mean is g/(1+g) exactly at recovery g

Recovery ≥ g ⟺ E[Z(g)] ≥ 0, so the gate passes when the bet on "above g/(1+g)"
wins and fails when the bet on "below" does. The recovery interval is the set of g
whose m = g/(1+g) neither bet has excluded, over a grid of g.

The documents of a task are drawn in a seeded order without replacement from a finite
pool. The boundary is proven for independent draws; drawing without replacement
changes its coverage for the full split's mean only by the finite-population factor
(the documents are more representative, not less).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np

ALPHA = 0.05
POWER = 0.80
C_MAX = 0.75  # the bet cap, as a share of the most a bet may stake (1/2 and 0.9 decided later or barely sooner in scripts/sim_until_decided.py)
GRID_CHUNK = 256  # ratios at a time: memory stays at 256 × rounds floats a temporary
GRID = np.round(np.arange(0.0, 2.0 + 1e-9, 0.0005), 6)  # recovery ratios the interval is read from
BOUNDARY = "betting confidence sequence (Waudby-Smith & Ramdas 2024, hedged capital), predictable plug-in bets"


def plug_in_bets(u: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """λ_t = sqrt(2 log(2/α) / (σ̂²_{t−1} t log(1+t))): sized by the spread seen before round t only."""
    n = u.shape[-1]
    t = np.arange(1, n + 1, dtype=np.float64)
    mu_hat = (0.5 + np.cumsum(u, axis=-1)) / (t + 1)
    sigma2_hat = (0.25 + np.cumsum((u - mu_hat) ** 2, axis=-1)) / (t + 1)
    prev_sigma2 = np.concatenate([np.full(u.shape[:-1] + (1,), 0.25), sigma2_hat[..., :-1]], axis=-1)
    return np.sqrt(2 * math.log(2 / alpha) / (prev_sigma2 * t * np.log1p(t)))


def betting_decisions(u: np.ndarray, m: float | np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """After each observation (last axis) of u ∈ [0, 1]: +1 once the mean is shown above m,
    −1 once shown below, 0 until then; m broadcasts against u's leading axes."""
    u = np.asarray(u, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    m = m[..., None] if m.ndim else m
    lam = plug_in_bets(u, alpha)
    with np.errstate(divide="ignore"):  # m = 0 or 1: that side's stake is not capped by m
        up = np.cumsum(np.log1p(np.minimum(lam, C_MAX / m) * (u - m)), axis=-1)
        down = np.cumsum(np.log1p(-np.minimum(lam, C_MAX / (1 - m)) * (u - m)), axis=-1)
    won = math.log(2 / alpha)
    first_up, first_down = first_crossing(up >= won), first_crossing(down >= won)
    t = np.arange(u.shape[-1])
    return np.where((t >= first_up) & (first_up <= first_down), 1, np.where(t >= first_down, -1, 0))


def first_crossing(hit: np.ndarray) -> np.ndarray:
    """The first index along the last axis where `hit` holds (its length where never), kept as a trailing axis."""
    return np.where(hit.any(axis=-1), hit.argmax(axis=-1), hit.shape[-1])[..., None]


def gate_statistic(x: np.ndarray, y: np.ndarray, g: float | np.ndarray) -> np.ndarray:
    """u(g) per round from per-round task scores x, y of shape (..., rounds, tasks) in [0, 1]."""
    g = np.asarray(g, dtype=np.float64)
    z = (x - g[..., None, None] * y).mean(axis=-1) if g.ndim else (x - g * y).mean(axis=-1)
    gg = g[..., None] if g.ndim else g
    return (z + gg) / (1 + gg)


def gate_decisions(x: np.ndarray, y: np.ndarray, gate: float, alpha: float = ALPHA) -> np.ndarray:
    """+1 (passes), −1 (fails) or 0 (undecided) after each round; x, y: (..., rounds, tasks)."""
    return betting_decisions(gate_statistic(x, y, gate), gate / (1 + gate), alpha)


@dataclass
class GateResult:
    gate: float
    verdict: str  # passes | fails | undecided
    decided_at: int | None  # the round the sequence first cleared or fell below the gate
    more_needed: int | None  # undecided: rounds a fixed design would still need (80 % power), from the observed spread


@dataclass
class Sequential:
    """The confidence sequence's answer after n rounds (documents per task)."""

    n: int
    tasks: int
    recovery: float | None
    recovery_lo: float | None
    recovery_hi: float | None
    gates: dict[str, GateResult]
    alpha: float = ALPHA

    def as_dict(self) -> dict:
        return {"n": self.n, "tasks": self.tasks, "recovery": self.recovery, "recovery_lo": self.recovery_lo,
                "recovery_hi": self.recovery_hi, "alpha": self.alpha, "boundary": BOUNDARY,
                "gates": {k: vars(v) for k, v in self.gates.items()}}


def more_needed(x: np.ndarray, y: np.ndarray, gate: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Rounds still needed by a fixed-n design to tell this recovery from the gate:
    n = ((z_{1−α/2} + z_power) · s / δ)², s and δ the observed spread and mean of Z(gate)."""
    z = (x - gate * y).mean(axis=-1)
    if len(z) < 2:
        return None
    delta, s = float(z.mean()), float(z.std(ddof=1))
    if delta == 0 or s == 0:
        return None
    k = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(0, math.ceil((k * s / delta) ** 2) - len(z))


def not_excluded(grid: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
                 null_mean: Callable[[np.ndarray], np.ndarray], alpha: float) -> tuple[float | None, float | None]:
    """The ends of the values of `grid` the sequence has not excluded after the last round (None, None:
    every one excluded); `statistic(values)` per value and round in [0, 1], whose mean is
    `null_mean(values)` at that value. The grid goes through in chunks of GRID_CHUNK."""
    chunks = (grid[i : i + GRID_CHUNK] for i in range(0, len(grid), GRID_CHUNK))
    kept = np.concatenate([c[betting_decisions(statistic(c), null_mean(c), alpha)[:, -1] == 0] for c in chunks])
    return (float(kept.min()), float(kept.max())) if len(kept) else (None, None)


def verdict(x: np.ndarray, y: np.ndarray, gates: tuple[float, ...], alpha: float = ALPHA) -> Sequential:
    """x, y: (rounds, tasks) per-document scores of the variant and its baseline, in draw order."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or not len(x):
        raise ValueError(f"paired scores of one shape (rounds, tasks) needed, got {x.shape} and {y.shape}")
    if x.min() < 0 or x.max() > 1 or y.min() < 0 or y.max() > 1:
        raise ValueError("the confidence sequence needs scores in [0, 1]")
    lo, hi = not_excluded(GRID, lambda g: gate_statistic(x, y, g), lambda g: g / (1 + g), alpha)
    mean_y = y.mean(axis=0).mean()
    out = {}
    for g in gates:
        d = gate_decisions(x, y, g, alpha)
        first = int(np.argmax(d != 0)) if np.any(d != 0) else None
        verdict = {1: "passes", -1: "fails", 0: "undecided"}[int(d[-1])]
        out[f"{g:g}"] = GateResult(g, verdict, first + 1 if first is not None else None,
                                   more_needed(x, y, g, alpha) if verdict == "undecided" else None)
    return Sequential(len(x), x.shape[1], float(x.mean(axis=0).mean() / mean_y) if mean_y > 0 else None, lo, hi, out, alpha)


DIFF_GRID = np.round(np.arange(-1.0, 1.0 + 1e-9, 0.0005), 6)  # accuracy differences the interval is read from


@dataclass
class EqualCost:
    """The same sequence on the suite-score difference of a quantized cell and another
    model's fp16 cell (an equal-cost question: the big model quantized against the small
    one at full precision), on the same documents in the same order. Each of the three
    answers is one bet of the family above, each wrong with probability at most α/2:
    better (the difference shown above 0), worse (below 0), within ±margin (shown above
    −margin and below +margin)."""

    against: str
    margin: float
    n: int
    difference: float
    lo: float | None
    hi: float | None
    verdict: str  # better | worse | within | undecided
    decided_at: int | None
    more_needed: int | None  # undecided: rounds a fixed design would need to tell the difference from 0
    alpha: float = ALPHA

    def as_dict(self) -> dict:
        return vars(self) | {"boundary": BOUNDARY, "sentence": self.sentence()}

    def sentence(self) -> str:
        d = f"{100 * self.difference:+.1f} points" + (f" ({100 * self.lo:+.1f} to {100 * self.hi:+.1f})" if self.lo is not None else "")
        if self.verdict == "undecided":
            more = f"; about {self.more_needed:,} more a task needed" if self.more_needed else ""
            return f"undecided against {self.against} fp16 at n = {self.n:,} a task, {d}{more}"
        what = f"within ±{100 * self.margin:g} points of" if self.verdict == "within" else f"{self.verdict} than"
        return f"{what} {self.against} fp16, {d}, decided after {self.decided_at:,} documents a task"


def difference_statistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """u per round in [0, 1]: (mean over tasks of x − y, + 1) / 2; its mean is (δ + 1) / 2."""
    return ((x - y).mean(axis=-1) + 1) / 2


def equal_cost_decisions(x: np.ndarray, y: np.ndarray, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """Per round (last axis): 1 better, −1 worse, 2 within ±margin, 0 undecided; x, y: (..., rounds, tasks)."""
    u = difference_statistic(x, y)
    side = betting_decisions(u, 0.5, alpha)
    inside = (betting_decisions(u, (1 - margin) / 2, alpha) == 1) & (betting_decisions(u, (1 + margin) / 2, alpha) == -1)
    return np.where(side != 0, side, np.where(inside, 2, 0))


def equal_cost(x: np.ndarray, y: np.ndarray, against: str, margin: float, alpha: float = ALPHA, interval: bool = True) -> EqualCost:
    """x: the quantized cell's (rounds, tasks) scores, y: the other model's fp16 scores, in draw order.
    `interval`: also read the difference's interval off DIFF_GRID (4,001 sequences: at the last look only)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or not len(x):
        raise ValueError(f"paired scores of one shape (rounds, tasks) needed, got {x.shape} and {y.shape}")
    d = equal_cost_decisions(x, y, margin, alpha)
    first = int(np.argmax(d != 0)) if np.any(d != 0) else None
    u = difference_statistic(x, y)
    lo, hi = (not_excluded(DIFF_GRID, lambda g: np.broadcast_to(u, (len(g), len(u))), lambda g: (g + 1) / 2, alpha)
              if interval else (None, None))
    verdict = {1: "better", -1: "worse", 2: "within", 0: "undecided"}[int(d[-1])]
    return EqualCost(against, margin, len(x), float((x - y).mean()), lo, hi, verdict, first + 1 if first is not None else None,
                     more_needed(x, y, 1.0, alpha) if verdict == "undecided" else None, alpha)


def decided(result: Sequential, required: tuple[float, ...]) -> bool:
    return all(result.gates[f"{g:g}"].verdict != "undecided" for g in required)


def simulated_rounds(rng: np.random.Generator, runs: int, rounds: int, tasks: int, table: tuple[float, float, float, float]) -> np.ndarray:
    """Counts per round of the four paired outcomes (x=1,y=1), (1,0), (0,1), (0,0) over `tasks`
    documents, shape (runs, rounds, 4), each document drawn independently from `table`."""
    cats = np.searchsorted(np.cumsum(table)[:-1], rng.random((runs, rounds, tasks)), side="right")
    return np.stack([(cats == k).sum(axis=-1) for k in range(4)], axis=-1).astype(np.int32)


def paired_scores(rng: np.random.Generator, runs: int, rounds: int, tasks: int,
                  table: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """x, y of shape (runs, rounds, tasks): each document's pair of 0/1 scores drawn from
    `table`, the chances of (1, 1), (1, 0), (0, 1), (0, 0)."""
    cats = np.searchsorted(np.cumsum(table)[:-1], rng.random((runs, rounds, tasks)), side="right")
    return np.isin(cats, (0, 1)).astype(np.float64), np.isin(cats, (0, 2)).astype(np.float64)


def first_answers(d: np.ndarray) -> np.ndarray:
    """Per run (rows of looks), the first non-zero answer, 0 where none came."""
    first = (d != 0).argmax(axis=1)
    return np.where((d != 0).any(axis=1), d[np.arange(len(d)), first], 0)


def fixed_n_equal_cost(x: np.ndarray, y: np.ndarray, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """As equal_cost_decisions, from a fixed-n normal interval of the mean difference taken
    afresh at every round: what a fixed design looked at after every step would answer."""
    z = (x - y).mean(axis=-1)
    n = np.arange(1, z.shape[-1] + 1)
    mean = np.cumsum(z, axis=-1) / n
    half = NormalDist().inv_cdf(1 - alpha / 2) * np.sqrt(np.maximum(np.cumsum(z**2, axis=-1) / n - mean**2, 1e-12) / n)
    return np.where(mean - half > 0, 1, np.where(mean + half < 0, -1, np.where((mean - half > -margin) & (mean + half < margin), 2, 0)))


def optional_stopping(seed: int = 20261205, runs: int = 10_000, rounds: int = 1000, look_every: int = 25, tasks: int = 5,
                      gate: float = 0.99, table: tuple[float, float, float, float] = (0.44, 0.055, 0.06, 0.445),
                      alpha: float = ALPHA, bootstrap_runs: int = 1000, resamples: int = 500) -> dict[str, float]:
    """Error rates when a run stops at the first look (every `look_every` rounds, up to `rounds`)
    whose verdict is not undecided, with the truth exactly on the gate (the default table:
    baseline 50 %, variant 49.5 %, 6 % of documents lost and 5.5 % gained): any verdict is then a
    claim the truth contradicts. The confidence sequence over `runs` runs; a fixed-n paired
    bootstrap percentile interval (evalq.verdicts' gate rule: lower end ≥ gate passes, upper
    end < gate fails) peeked at every look, over `bootstrap_runs` runs."""
    p_x, p_y = table[0] + table[1], table[0] + table[2]
    if abs(p_x - gate * p_y) > 1e-12:
        raise ValueError(f"the table's recovery is {p_x / p_y:.4f}, not the gate {gate}")
    rng = np.random.default_rng(seed)
    looks = np.arange(look_every, rounds + 1, look_every) - 1
    cs = {"passes": 0, "fails": 0}
    for start in range(0, runs, 1000):
        counts = simulated_rounds(rng, min(1000, runs - start), rounds, tasks, table)
        z = (counts[..., 0] * (1 - gate) + counts[..., 1] - gate * counts[..., 2]) / tasks
        decision = betting_decisions((z + gate) / (1 + gate), gate / (1 + gate), alpha)[:, looks]
        first = decision[np.arange(len(decision)), np.argmax(decision != 0, axis=1)]
        cs["passes"] += int(np.sum(first == 1))
        cs["fails"] += int(np.sum(first == -1))
    counts = np.cumsum(simulated_rounds(rng, bootstrap_runs, rounds, tasks, table), axis=1)
    boot = {"passes": 0, "fails": 0}
    stopped = np.zeros(bootstrap_runs, dtype=bool)
    for look in looks:
        c = counts[:, look, :]
        n = int(c[0].sum())
        draws = rng.multinomial(n, c / n, size=(resamples, bootstrap_runs))  # (resamples, runs, 4)
        ratio = (draws[..., 0] + draws[..., 1]) / np.maximum(draws[..., 0] + draws[..., 2], 1)
        lo, hi = np.percentile(ratio, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        for name, hit in (("passes", lo >= gate), ("fails", hi < gate)):
            boot[name] += int(np.sum(hit & ~stopped))
            stopped |= hit
    return {"runs": runs, "cs_passes": cs["passes"] / runs, "cs_fails": cs["fails"] / runs,
            "cs_error": (cs["passes"] + cs["fails"]) / runs, "bootstrap_runs": bootstrap_runs,
            "bootstrap_passes": boot["passes"] / bootstrap_runs, "bootstrap_fails": boot["fails"] / bootstrap_runs,
            "bootstrap_error": (boot["passes"] + boot["fails"]) / bootstrap_runs,
            "looks": len(looks), "rounds": rounds, "tasks": tasks, "alpha": alpha}
