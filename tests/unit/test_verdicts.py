"""The comparison engine against independent computations (scipy), and its
error rates: the null declared different at most α of the time, a real
10-point difference on 1,000 documents found every time."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evalq.verdicts import BATCH, GATES, Comparison, Difference, compare_documents, document_scores, holm


def cell(**tasks: np.ndarray) -> dict[str, dict[tuple[str, str], float]]:
    # ids zero-padded: the engine orders documents by key, so scipy sees them in the same order
    return {t: {(f"{i:05d}", f"h{i}"): float(v) for i, v in enumerate(values)} for t, values in tasks.items()}


def test_one_tasks_interval_is_scipys_paired_percentile_bootstrap():
    rng = np.random.default_rng(0)
    x = (rng.random(300) < 0.62).astype(float)
    y = np.where(rng.random(300) < 0.2, 1 - x, x)
    ours = compare_documents(cell(t=x), cell(t=y), seed=7, resamples=1999)
    ref = stats.bootstrap((x, y), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis), paired=True, vectorized=True,
                          n_resamples=1999, batch=BATCH, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(7))
    d = ours.tasks["t"]
    assert (d.lo, d.hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    assert d.diff == pytest.approx(x.mean() - y.mean())


def test_a_tasks_p_value_is_the_exact_mcnemar_binomial_test():
    x = np.array([1] * 30 + [0] * 12 + [1] * 40 + [0] * 18, dtype=float)  # 30 only A right, 12 only B right
    y = np.array([0] * 30 + [1] * 12 + [1] * 40 + [0] * 18, dtype=float)
    d = compare_documents(cell(t=x), cell(t=y), resamples=999).tasks["t"]
    assert d.p == pytest.approx(stats.binomtest(12, 42, 0.5).pvalue, rel=1e-12)
    assert d.n == 100 and d.diff == pytest.approx(0.18)


def test_the_suite_is_the_mean_of_its_task_scores_resampled_within_each_task():
    rng = np.random.default_rng(1)
    big, small = (rng.random(1000) < 0.7).astype(float), (rng.random(50) < 0.3).astype(float)
    c = compare_documents(cell(big=big, small=small), cell(big=big, small=small), resamples=999)
    assert c.suite.a == pytest.approx((big.mean() + small.mean()) / 2)  # not the pooled 1,050 documents' mean
    assert c.suite.diff == 0 and c.suite.p == 1 and c.suite.mde is None and c.suite.recovery == 1
    assert c.suite.n == 1050


def test_the_same_model_is_declared_different_at_most_alpha_of_the_time():
    """Two cells drawn from the same per-document chances (the null true): over
    200 seeds, task and suite verdicts at α = 0.05 reject no more than α allows
    (binomial 99.9 % upper bound for 200 trials: 21)."""
    rejections_task = rejections_suite = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        p1, p2 = rng.random(300), rng.random(120)
        a = cell(t1=(rng.random(300) < p1).astype(float), t2=(rng.random(120) < p2).astype(float))
        b = cell(t1=(rng.random(300) < p1).astype(float), t2=(rng.random(120) < p2).astype(float))
        c = compare_documents(a, b, seed=seed, resamples=499)
        rejections_task += c.tasks["t1"].p < 0.05
        rejections_suite += c.suite.p < 0.05
    assert rejections_task <= 21 and rejections_suite <= 21, (rejections_task, rejections_suite)


def test_an_injected_ten_point_difference_on_1000_documents_is_found_every_time():
    for seed in range(30):
        rng = np.random.default_rng(1000 + seed)
        b = (rng.random(1000) < 0.5).astype(float)
        a = b.copy()
        wrong = np.flatnonzero(b == 0)
        a[rng.choice(wrong, 100, replace=False)] = 1  # exactly ten points more
        c = compare_documents(cell(t=a), cell(t=b), seed=seed, resamples=999)
        assert c.tasks["t"].diff == pytest.approx(0.1)
        assert c.tasks["t"].p < 0.05 and c.suite.p < 0.05 and c.suite.lo > 0, seed


def test_minimum_detectable_effect_follows_the_documents():
    rng = np.random.default_rng(2)
    x = (rng.random(400) < 0.5).astype(float)
    y = np.where(rng.random(400) < 0.1, 1 - x, x)
    small = compare_documents(cell(t=x[:100]), cell(t=y[:100]), resamples=499).tasks["t"]
    large = compare_documents(cell(t=x), cell(t=y), resamples=499).tasks["t"]
    sd = np.std(x - y, ddof=1)
    assert large.mde == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / 20)
    assert small.mde > large.mde


def test_recovery_gates():
    def with_recovery(lo: float, hi: float) -> Comparison:
        return Comparison(suite=Difference(500, 0.6, 0.6, -0.01, 0.01, 1.0, 0.02, 1.0, lo, hi))

    assert with_recovery(0.995, 1.01).gate(0.99) == "passes"
    assert with_recovery(0.95, 0.985).gate(0.99) == "fails"
    assert with_recovery(0.98, 1.01).gate(0.99) == "undetermined at n = 500"
    assert GATES == (0.99, 0.999)
    rng = np.random.default_rng(3)
    b = (rng.random(2000) < 0.6).astype(float)
    a = np.where((b == 1) & (rng.random(2000) < 0.2), 0.0, b)  # about 80 % recovery
    c = compare_documents(cell(t=a), cell(t=b), resamples=999)
    assert c.suite.recovery == pytest.approx(a.mean() / b.mean()) and c.gate(0.99) == "fails"
    assert c.as_dict()["gates"] == {"0.99": "fails", "0.999": "fails"}


def test_cells_without_shared_documents_are_not_compared():
    a = cell(t=np.ones(10))
    b = {"t": {(f"{i:05d}", "other"): 1.0 for i in range(10)}}  # same ids, other document contents
    c = compare_documents(a, b)
    assert not c.comparable and c.reason == "no document of t scored by both" and c.unpaired == 20
    assert compare_documents(a, {}).reason == "t scored by one side only"


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])


def test_headline_scores_per_document_from_lm_eval_samples():
    samples = [{"doc_id": 0, "doc_hash": "a", "acc": 1.0, "acc_norm": 0.0, "filter": "none"},
               {"doc_id": 1, "doc_hash": "b", "acc": 0.0, "acc_norm": 1.0, "filter": "none"}]
    assert document_scores(samples, "acc_norm") == {("0", "a"): 0.0, ("1", "b"): 1.0}
    gsm = [{"doc_id": 0, "doc_hash": "a", "exact_match": 1.0, "filter": "strict-match"},
           {"doc_id": 0, "doc_hash": "a", "exact_match": 0.0, "filter": "flexible-extract"}]
    assert document_scores(gsm, "exact_match,strict-match") == {("0", "a"): 1.0}
    assert document_scores(samples, "acc", prefix="mmlu_anatomy/") == {("mmlu_anatomy/0", "a"): 1.0, ("mmlu_anatomy/1", "b"): 0.0}


def test_an_undecided_gate_says_what_a_fixed_design_would_still_need():
    from evalq.sequential import GateResult, Sequential
    from evalq.verdicts import sequential_gate

    def said(more: int | None) -> str:
        return sequential_gate(Sequential(120, 5, 1.068, 0.965, 1.161, {"0.99": GateResult(0.99, "undecided", None, more)}), 0.99)

    assert said(598) == "undecided at n = 120 a task; about 598 more a task needed"
    # the spread seen says a fixed-n test would decide at this size; the anytime-valid sequence has not: never "0 more"
    assert said(0) == "undecided at n = 120 a task; a fixed design of this size would decide, the sequence needs more"
    assert said(None) == "undecided at n = 120 a task"
    decided = Sequential(60, 5, 0.74, 0.54, 0.97, {"0.99": GateResult(0.99, "fails", 56, None)})
    assert sequential_gate(decided, 0.99) == "fails (decided after 56 documents a task)"
