"""The anytime-valid gates (evalq.sequential): coverage under optional stopping, and the
error a fixed-n bootstrap peeked at every batch makes instead."""
from __future__ import annotations

import numpy as np
import pytest

from evalq import sequential
from evalq.sequential import betting_decisions, more_needed, optional_stopping, verdict


def test_the_sequence_covers_the_mean_at_every_n_at_once():
    rng = np.random.default_rng(1)
    u = (rng.random((2000, 800)) < 0.3).astype(float)
    at_truth = betting_decisions(u, 0.3, alpha=0.05)
    assert np.any(at_truth != 0, axis=1).mean() <= 0.05  # the true mean ever excluded
    off = betting_decisions(u, np.array([[0.15], [0.45]]), alpha=0.05)  # (2, 2000, 800): below and above the truth
    assert np.all(np.diff(off, axis=-1) * off[..., 1:] >= 0)  # once excluded, for good
    assert (off[0, :, -1] == 1).mean() > 0.95 and (off[1, :, -1] == -1).mean() > 0.95
    assert (off[0, :, 49] == 1).mean() < 0.5  # 50 observations are seldom enough to tell 0.3 from 0.15


def test_optional_stopping_keeps_alpha_where_a_peeked_bootstrap_does_not():
    # 10,000 runs with the truth exactly on the 99 % gate, stopped at the first of 40 looks
    # that decides: every verdict is an error
    rates = optional_stopping(runs=10_000, rounds=1000, look_every=25, bootstrap_runs=600, resamples=400)
    assert rates["cs_error"] <= rates["alpha"]
    assert rates["bootstrap_error"] > 2 * rates["alpha"]


def test_optional_stopping_refuses_a_truth_off_the_gate():
    with pytest.raises(ValueError, match="not the gate"):
        optional_stopping(runs=10, table=(0.5, 0.0, 0.0, 0.5))


def paired(rng, rounds, tasks, p_base, lost, gained):
    y = (rng.random((rounds, tasks)) < p_base).astype(float)
    r = rng.random((rounds, tasks))
    x = np.where(y == 1, (r >= lost / p_base).astype(float), (r < gained / (1 - p_base)).astype(float))
    return x, y


def test_a_variant_that_loses_a_third_fails_and_an_identical_one_passes_a_low_gate():
    rng = np.random.default_rng(7)
    x, y = paired(rng, 400, 5, 0.5, 0.2, 0.03)  # recovery ≈ 0.66
    out = verdict(x, y, (0.99,))
    assert out.gates["0.99"].verdict == "fails" and out.gates["0.99"].decided_at <= 400
    assert out.recovery_hi < 0.99 and out.recovery_lo <= out.recovery <= out.recovery_hi
    same = verdict(y, y, (0.8,))
    assert same.gates["0.8"].verdict == "passes"
    assert same.recovery == 1.0 and same.recovery_lo < 1.0 <= same.recovery_hi


def test_undecided_says_how_many_more_a_fixed_design_needs():
    rng = np.random.default_rng(3)
    x, y = paired(rng, 60, 5, 0.5, 0.06, 0.05)
    out = verdict(x, y, (0.99,))
    assert out.gates["0.99"].verdict == "undecided" and out.gates["0.99"].decided_at is None
    z = (x - 0.99 * y).mean(axis=1)
    expected = ((1.959964 + 0.841621) * z.std(ddof=1) / z.mean()) ** 2 - 60
    assert out.gates["0.99"].more_needed == pytest.approx(expected, abs=1.5)
    assert more_needed(y, y, 1.0) is None  # no spread, no difference: nothing to say


def test_scores_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        verdict(np.full((3, 1), 2.0), np.ones((3, 1)), (0.99,))
    with pytest.raises(ValueError, match="one shape"):
        verdict(np.ones((3, 2)), np.ones((3, 1)), (0.99,))


def test_gate_decisions_never_flip_once_made():
    rng = np.random.default_rng(11)
    x, y = paired(rng, 500, 5, 0.6, 0.15, 0.02)
    d = sequential.gate_decisions(x, y, 0.99)
    first = int(np.argmax(d != 0))
    assert d[first] == -1 and np.all(d[first:] == -1)


@pytest.mark.parametrize("truth, wrong", [
    ((0.40, 0.05, 0.05, 0.50), {1, -1}),  # no difference: "better" or "worse" is an error ("within" is right)
    ((0.40, 0.06, 0.04, 0.50), {2, -1}),  # exactly +2 points, the margin: "within" or "worse" is an error
])
def test_equal_cost_answers_keep_alpha_under_optional_stopping(truth, wrong):
    """Stopping at the first look with an answer (every 20 documents a task, up to 600) is
    wrong at most α of the time; a fixed-n 95 % interval looked at on the same runs is
    wrong far more often."""
    x, y = sequential.paired_scores(np.random.default_rng(7), 2000, 600, 5, truth)
    answers = sequential.first_answers(sequential.equal_cost_decisions(x, y, 0.02)[:, 19::20])
    error_rate = np.isin(answers, list(wrong)).mean()
    assert error_rate <= sequential.ALPHA, error_rate
    peeked = np.isin(sequential.first_answers(sequential.fixed_n_equal_cost(x, y, 0.02)[:, 19::20]), list(wrong)).mean()
    assert peeked > sequential.ALPHA, peeked


def test_equal_cost_says_better_worse_or_within_and_how_soon():
    rng = np.random.default_rng(3)
    big = (rng.random((200, 5)) < 0.6).astype(float)
    small = (rng.random((200, 5)) < 0.3).astype(float)
    better = sequential.equal_cost(big, small, "small", 0.02)
    assert better.verdict == "better" and better.lo > 0 and better.decided_at < 200
    assert sequential.equal_cost(small, big, "big", 0.02).verdict == "worse"
    flips = rng.random((600, 5)) < 0.02
    same = np.where(flips, 1 - big.repeat(3, axis=0), big.repeat(3, axis=0))
    within = sequential.equal_cost(big.repeat(3, axis=0), same, "twin", 0.05)
    assert within.verdict == "within" and -0.05 < within.lo <= within.hi < 0.05
    assert "within ±5 points of twin fp16" in within.sentence()
    early = sequential.equal_cost(big[:10], small[:10], "small", 0.02)
    assert early.verdict == "undecided" and early.more_needed and "more a task needed" in early.sentence()
