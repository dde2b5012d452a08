"""Optional stopping, simulated: the confidence sequence evalq stops on against a
fixed-n paired bootstrap looked at after every batch.

Each run draws paired 0/1 scores (a variant and its fp16 baseline) round by round, a
round being one document of each of 5 tasks, with the truth exactly on the 99 %
recovery gate; it stops at the first look that gives a verdict. Any verdict is then
wrong, so the share of runs that give one is the error rate under optional stopping.
A second table shows how soon the sequence decides when the truth is away from the gate,
a third the equal-cost answers (better, worse, within ±2 points) at a truth on a boundary.

    python scripts/sim_until_decided.py --runs 10000
"""
from __future__ import annotations

import argparse

import numpy as np

from evalq.sequential import (equal_cost_decisions, first_answers, fixed_n_equal_cost, gate_decisions, optional_stopping,
                              paired_scores, simulated_rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--bootstrap-runs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1000, help="documents per task at most")
    ap.add_argument("--look-every", type=int, default=25, help="documents per task between looks")
    args = ap.parse_args()
    r = optional_stopping(runs=args.runs, rounds=args.rounds, look_every=args.look_every,
                          bootstrap_runs=args.bootstrap_runs, resamples=1000)
    print(f"truth on the 99 % gate; {r['tasks']} tasks; a look every {args.look_every} documents a task, "
          f"{r['looks']} looks; α = {r['alpha']}")
    print(f"{'method':<40}{'runs':>8}{'false passes':>14}{'false fails':>13}{'error':>8}")
    print(f"{'confidence sequence (evalq)':<40}{r['runs']:>8}{r['cs_passes']:>14.4f}{r['cs_fails']:>13.4f}{r['cs_error']:>8.4f}")
    print(f"{'bootstrap 95 % CI, peeked at every look':<40}{r['bootstrap_runs']:>8}{r['bootstrap_passes']:>14.4f}"
          f"{r['bootstrap_fails']:>13.4f}{r['bootstrap_error']:>8.4f}")
    print(f"ratio of error rates: {r['bootstrap_error'] / max(r['cs_error'], 1 / r['runs']):.0f}× "
          f"(a zero count taken as 1/{r['runs']})")
    print()
    print("how soon it decides (baseline 50 %, 1,000 runs, budget", args.rounds, "documents a task)")
    print(f"{'true recovery':>14}{'lost':>7}{'gained':>8}{'verdict':>10}{'right':>9}{'median n':>10}")
    rng = np.random.default_rng(5)
    for lost, gained in ((0.20, 0.02), (0.10, 0.02), (0.06, 0.03), (0.02, 0.04)):
        table = (0.5 - lost, gained, lost, 0.5 - gained)
        counts = simulated_rounds(rng, 1000, args.rounds, 5, table)
        x = np.array([1.0, 1.0, 0.0, 0.0])  # per category: the variant's and the baseline's score
        y = np.array([1.0, 0.0, 1.0, 0.0])
        xs = np.stack([np.repeat(x, c) for c in counts.reshape(-1, 4)]).reshape(1000, args.rounds, 5)
        ys = np.stack([np.repeat(y, c) for c in counts.reshape(-1, 4)]).reshape(1000, args.rounds, 5)
        d = gate_decisions(xs, ys, 0.99)
        any_ = np.any(d != 0, axis=1)
        first = np.argmax(d != 0, axis=1) + 1
        truth = (0.5 - lost + gained) / 0.5
        verdict = "fails" if truth < 0.99 else "passes"
        right = d[np.arange(len(d)), first - 1] == (1 if verdict == "passes" else -1)
        print(f"{truth:>14.3f}{lost:>7.2f}{gained:>8.2f}{verdict:>10}{np.mean(any_ & right):>9.1%}"
              f"{(np.median(first[any_]) if any_.any() else float('nan')):>10.0f}")

    print()
    equal_cost_errors(args.runs, args.rounds, args.look_every)


def equal_cost_errors(runs: int, rounds: int, look_every: int, margin: float = 0.02, chunk: int = 1000) -> None:
    """Equal-cost questions under optional stopping: the share of runs whose first answer is wrong."""
    print(f"equal-cost answers, margin ±{100 * margin:g} points; a look every {look_every} documents a task up to {rounds}")
    print(f"{'true difference':<20}{'wrong answers':<22}{'runs':>8}{'sequence (evalq)':>18}{'fixed-n CI, peeked':>20}")
    rng = np.random.default_rng(11)
    for label, table, wrong, names in (("0 points", (0.40, 0.05, 0.05, 0.50), {1, -1}, "better, worse"),
                                       (f"+{100 * margin:g} points", (0.40, 0.06, 0.04, 0.50), {2, -1}, "within, worse")):
        cs = peeked = 0
        for start in range(0, runs, chunk):
            x, y = paired_scores(rng, min(chunk, runs - start), rounds, 5, table)
            cs += np.isin(first_answers(equal_cost_decisions(x, y, margin)[:, look_every - 1 :: look_every]), list(wrong)).sum()
            peeked += np.isin(first_answers(fixed_n_equal_cost(x, y, margin)[:, look_every - 1 :: look_every]), list(wrong)).sum()
        print(f"{label:<20}{names:<22}{runs:>8}{cs / runs:>18.4f}{peeked / runs:>20.4f}")


if __name__ == "__main__":
    main()
