"""Evaluation in rounds until decided (evalq.measure.until_decided): the seeded draw
order, the metrics recomputed over rounds, and where the loop stops. The loop is
driven here by a scripted evaluate (per-document records with known scores); the
real lm-eval path runs in tests/integration/test_until_decided_run.py."""
from __future__ import annotations

import numpy as np
import pytest

from evalq.matrix import UntilDecided
from evalq.measure.until_decided import draw_order, evaluate_until_decided, recompute_metrics
from evalq.suites import Suite, TaskSpec, load_suite


def suite(*names: str, samples: dict[str, list[int]] | None = None) -> Suite:
    return Suite(name="s", tasks=[TaskSpec(task=n, metric="acc", samples={n: samples[n]} if samples and n in samples else None)
                                  for n in names])


def test_the_draw_order_is_a_seeded_permutation_per_task_cut_to_the_pool():
    demo = load_suite("demo")
    arc = demo.tasks[0]
    a = draw_order(arc, 1, lambda _: 0, None)
    assert sorted(a) == sorted(arc.samples[arc.task]) and a != arc.samples[arc.task]
    assert draw_order(arc, 1, lambda _: 0, None) == a  # the same on every call and machine
    assert draw_order(arc, 2, lambda _: 0, None) != a
    assert draw_order(arc, 1, lambda _: 0, 10) == a[:10]
    whole = draw_order(TaskSpec(task="piqa"), 1, lambda name: 1838, 500)
    assert len(whole) == 500 and len(set(whole)) == 500 and max(whole) < 1838
    assert draw_order(TaskSpec(task="hellaswag"), 1, lambda name: 1838, 500) != whole  # each task its own order


def test_a_group_task_is_refused_by_name():
    group = TaskSpec(task="mmlu", samples={"mmlu_anatomy": [1, 2], "mmlu_virology": [3]})
    with pytest.raises(ValueError, match="mmlu is a group"):
        draw_order(group, 1, lambda _: 0, None)


def test_metrics_are_recomputed_over_every_round():
    samples = {"a": [{"acc": 1.0}, {"acc": 0.0}, {"acc": 1.0}, {"acc": 1.0}], "ppl": [{"word_perplexity": (1, 2)}]}
    out = recompute_metrics(samples, {"a": {"acc": 0.0, "acc_stderr": 0.0, "num_fewshot": 0},
                                      "ppl": {"word_perplexity": 12.5}}, {"a"})
    assert out["a"]["acc"] == 0.75 and out["a"]["acc_stderr"] == pytest.approx(0.25)
    assert out["ppl"] == {"word_perplexity": 12.5}  # not drawn: kept as evaluated


class Scripted:
    """evaluate() over a fixed answer sheet: doc id → score per task, the records lm-eval's
    samples would hold. Counts the documents asked for."""

    def __init__(self, sheet: dict[str, dict[int, float]]):
        self.sheet, self.asked = sheet, []

    def __call__(self, suites: list[Suite]) -> dict:
        ids = {t.task: t.samples[t.task] for s in suites for t in s.tasks}
        self.asked.append(ids)
        return {"metrics": {t: {"acc": 0.0, "num_fewshot": 0} for t in ids}, "n_samples": {}, "lm_eval": {},
                "samples": {t: [{"doc_id": d, "doc_hash": "h", "acc": self.sheet[t][d]} for d in docs] for t, docs in ids.items()}}


def run(sheet, baseline, settings, checkpoint=None, seed=5, ev=None, rivals=None):
    ev = ev or Scripted(sheet)
    tasks = sorted(sheet)
    out = evaluate_until_decided(ev, [suite(*tasks)], settings, seed, baseline, lambda name: len(sheet[name]), log=lambda _: None,
                                 checkpoint=checkpoint, rivals=rivals)
    return ev, out


def test_a_variant_that_loses_half_stops_as_soon_as_the_gate_is_decided():
    rng = np.random.default_rng(0)
    base = {t: {d: float(rng.random() < 0.6) for d in range(2000)} for t in ("a", "b")}
    worse = {t: {d: v * float(rng.random() < 0.5) for d, v in s.items()} for t, s in base.items()}
    ev, out = run(worse, {t: {str(d): v for d, v in s.items()} for t, s in base.items()},
                  UntilDecided(step=20, max_documents=1000, gates=[0.99]))
    u = out["until_decided"]
    assert u["stop"] == "decided" and u["documents"] < 1000 and u["documents"] % 20 == 0
    assert u["sequential"]["gates"]["0.99"]["verdict"] == "fails"
    assert sum(len(a["a"]) for a in ev.asked) == u["documents"]  # nothing evaluated past the decision
    assert [r["doc_id"] for r in out["samples"]["a"]] == u["order"]["a"]  # in draw order
    assert out["metrics"]["a"]["acc"] == pytest.approx(np.mean([worse["a"][d] for d in u["order"]["a"]]))
    assert out["n_samples"]["a"] == {"original": 2000, "effective": u["documents"]}


def test_an_equal_cost_question_keeps_the_cell_going_until_it_too_is_decided():
    """The gate fails early (half the answers lost); the question against a small model
    that is a little worse than the big one's quantized cell takes longer, and the cell
    stops only when both are decided."""
    rng = np.random.default_rng(4)
    base = {t: {d: float(rng.random() < 0.8) for d in range(3000)} for t in ("a", "b")}
    worse = {t: {d: v * float(rng.random() < 0.7) for d, v in s.items()} for t, s in base.items()}
    small = {t: {str(d): float(rng.random() < 0.35) for d in range(3000)} for t in ("a", "b")}
    as_str = {t: {str(d): v for d, v in s.items()} for t, s in base.items()}
    settings = UntilDecided(step=10, max_documents=3000, gates=[0.99])
    _, gate_only = run(worse, as_str, settings)
    _, both = run(worse, as_str, settings, rivals={"small": (0.02, small)})
    g, u = gate_only["until_decided"], both["until_decided"]
    assert g["stop"] == u["stop"] == "decided" and "equal_cost" not in g
    assert u["documents"] > g["documents"]  # the question took longer than the gate
    q = u["equal_cost"]["small"]
    assert q["verdict"] == "better" and q["lo"] > 0 and q["decided_at"] <= u["documents"] and q["n"] == u["documents"]
    _, unpaired = run(worse, as_str, UntilDecided(step=10, max_documents=300, gates=[0.99]), rivals={"small": (0.02, {"a": {}, "b": {}})})
    assert unpaired["until_decided"]["documents"] == g["documents"]  # a rival with no scores never holds the cell


def test_without_a_baseline_the_whole_budget_runs():
    sheet = {"a": {d: 1.0 for d in range(100)}}
    ev, out = run(sheet, None, UntilDecided(step=30, max_documents=70))
    assert out["until_decided"]["stop"] == "budget" and out["until_decided"]["documents"] == 70
    assert [len(a["a"]) for a in ev.asked] == [30, 30, 10] and out["until_decided"]["sequential"] is None


def test_it_stops_where_the_baseline_stopped():
    sheet = {"a": {d: 1.0 for d in range(100)}}
    order = draw_order(TaskSpec(task="a"), 5, lambda _: 100, None)
    baseline = {"a": {str(d): 1.0 for d in order[:40]}}
    _, out = run(sheet, baseline, UntilDecided(step=25, max_documents=100))
    assert out["until_decided"]["stop"] == "baseline" and out["until_decided"]["sequential"]["n"] == 40


def test_a_larger_budget_continues_the_saved_rounds_in_the_same_order(tmp_path):
    rng = np.random.default_rng(2)
    sheet = {t: {d: float(rng.random() < 0.5) for d in range(300)} for t in ("a", "b")}
    saved = tmp_path / "rounds.json.gz"
    _, first = run(sheet, None, UntilDecided(step=50, max_documents=100), saved)
    ev, more = run(sheet, None, UntilDecided(step=50, max_documents=150), saved)
    assert [len(a["a"]) for a in ev.asked] == [50]  # only the new documents
    assert ev.asked[0]["a"] == more["until_decided"]["order"]["a"][100:150]
    assert more["until_decided"]["order"]["a"][:100] == first["until_decided"]["order"]["a"]
    assert more["until_decided"]["resumed_at"] == 100 and more["until_decided"]["documents"] == 150
    assert [r["doc_id"] for r in more["samples"]["a"]] == more["until_decided"]["order"]["a"]
    assert more["metrics"]["b"]["acc"] == pytest.approx(np.mean([sheet["b"][d] for d in more["until_decided"]["order"]["b"]]))
    ev, fewer = run(sheet, None, UntilDecided(step=50, max_documents=60), saved)  # a smaller budget reads the first 60
    assert ev.asked == [] and len(fewer["samples"]["a"]) == 60 and fewer["until_decided"]["documents"] == 60


class DiesInRound(Scripted):
    def __init__(self, sheet, round_):
        super().__init__(sheet)
        self.round = round_

    def __call__(self, suites):
        if len(self.asked) + 1 == self.round:
            raise RuntimeError("killed")
        return super().__call__(suites)


def test_a_run_that_died_continues_from_its_last_round(tmp_path):
    rng = np.random.default_rng(4)
    base = {t: {d: float(rng.random() < 0.6) for d in range(400)} for t in ("a", "b")}
    worse = {t: {d: v * float(rng.random() < 0.6) for d, v in s.items()} for t, s in base.items()}
    baseline = {t: {str(d): v for d, v in s.items()} for t, s in base.items()}
    saved = tmp_path / "rounds.json.gz"
    with pytest.raises(RuntimeError, match="killed"):
        run(worse, baseline, UntilDecided(step=10, max_documents=400), saved, ev=DiesInRound(worse, 3))
    ev, out = run(worse, baseline, UntilDecided(step=10, max_documents=400), saved)
    _, fresh = run(worse, baseline, UntilDecided(step=10, max_documents=400))
    order = out["until_decided"]["order"]["a"]
    assert ev.asked[0]["a"] == order[20:30]  # rounds 1 and 2 were kept
    assert out["until_decided"]["stop"] == "decided" and out["until_decided"]["resumed_at"] == 20
    assert out["until_decided"]["sequential"] == fresh["until_decided"]["sequential"]  # as if it had never died
    assert out["metrics"] == fresh["metrics"]


def test_rounds_drawn_in_another_order_are_not_continued(tmp_path):
    sheet = {"a": {d: 1.0 for d in range(100)}}
    saved = tmp_path / "rounds.json.gz"
    run(sheet, None, UntilDecided(step=20, max_documents=40), saved, seed=5)
    ev, out = run(sheet, None, UntilDecided(step=20, max_documents=40), saved, seed=6)
    assert [len(a["a"]) for a in ev.asked] == [20, 20] and out["until_decided"]["resumed_at"] == 0
    saved.write_bytes(b"not gzip")
    ev, _ = run(sheet, None, UntilDecided(step=20, max_documents=40), saved, seed=6)  # damaged: start over
    assert len(ev.asked) == 2
