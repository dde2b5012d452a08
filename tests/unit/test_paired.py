"""Answer-level pairing against fp16 (flips, exact McNemar, choice KLD) and the
sanity flags of a quantization that did not happen."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy.stats import binomtest

from evalq.cell import expand
from evalq.matrix import read_matrix
from evalq.verdicts import mcnemar_exact
from evalq.paired import choice_kld, flips, mc_answers, pair_rows, sanity_flags
from evalq.record import records_of
from evalq.results import to_csv
from evalq.store import Store
from evalq.store.tables import CellRow

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("b,c", [(0, 1), (1, 0), (3, 9), (10, 10), (0, 25), (40, 61), (700, 780)])
def test_mcnemar_exact_equals_the_two_sided_binomial_test(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_with_no_discordant_pair_is_one():
    assert mcnemar_exact(0, 0) == 1.0


def sample(doc_id: int, correct: bool, lls: list[float]) -> dict:
    return {"doc_id": doc_id, "doc_hash": f"h{doc_id}", "acc": 1.0 if correct else 0.0,
            "filtered_resps": [[ll, False] for ll in lls]}


BASE = [sample(0, True, [-1.0, -3.0]), sample(1, True, [-0.5, -2.0]), sample(2, False, [-2.0, -1.0]),
        sample(3, False, [-4.0, -1.0]), sample(4, True, [-1.0, -1.5])]
QUANT = [sample(0, False, [-3.0, -1.0]), sample(1, True, [-0.6, -2.0]), sample(2, True, [-1.0, -2.0]),
         sample(3, False, [-4.0, -1.0]), sample(5, True, [-1.0, -9.0])]


def test_flips_count_both_directions_and_unpaired_documents():
    f = flips(mc_answers(BASE), mc_answers(QUANT))
    assert (f.n, f.correct_to_wrong, f.wrong_to_correct, f.unpaired) == (4, 1, 1, 2)
    assert f.flip_rate == 0.5 and f.mcnemar_p == 1.0
    assert f.choice_kld > 0


def test_a_cell_compared_with_itself_has_no_flip_and_zero_choice_kld():
    f = flips(mc_answers(BASE), mc_answers(BASE))
    assert (f.flips, f.unpaired, f.choice_kld, f.mcnemar_p) == (0, 0, 0.0, 1.0)


def test_choice_kld_equals_a_direct_computation():
    p = [math.exp(-1) / (math.exp(-1) + math.exp(-3)), math.exp(-3) / (math.exp(-1) + math.exp(-3))]
    q = [math.exp(-3) / (math.exp(-1) + math.exp(-3)), math.exp(-1) / (math.exp(-1) + math.exp(-3))]
    assert choice_kld([-1.0, -3.0], [-3.0, -1.0]) == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q)), rel=1e-12)


def test_rolling_perplexity_records_are_not_multiple_choice():
    assert mc_answers([{"doc_id": 0, "doc_hash": "x", "filtered_resps": [-2064.0], "word_perplexity": [-2064.0, 541]}]) == {}


def row(variant: str, weights: int, **result) -> CellRow:
    return CellRow(key=variant, matrix="m", model="M", variant=variant, status="ok", weights_bytes=weights,
                  cell={}, metrics={"t": {"acc": 0.5}}, result={"details": {"bits": 4, "quantized_modules": 7}, **result})


def test_a_quantized_cell_that_is_not_quantized_is_flagged():
    base = row("fp16", 1000)
    fake = row("nf4", 1000, quality={"kld_mean": 0.0, "ppl_ratio": 1.0}, details={"bits": 4, "quantized_modules": 0})
    flags = sanity_flags(fake, base)
    assert any("no quantized module" in f for f in flags)
    assert any("1.00× fp16" in f for f in flags)
    assert any("exactly 0" in f for f in flags)
    good = row("nf4", 300, quality={"kld_mean": 0.2, "ppl_ratio": 1.3})
    assert sanity_flags(good, base) == []
    broken = row("nf4", 300, quality={"kld_mean": 3.0, "ppl_ratio": 19.6})  # the AMX-path failure of issue 8
    assert any("perplexity 19.60× fp16's" in f for f in sanity_flags(broken, base))
    assert sanity_flags(base, None) == []  # the baseline is never suspect of not being quantized


def test_calibration_overlap_warnings_become_flags():
    warned = row("gptq-4", 300, quality={"kld_mean": 0.2, "ppl_ratio": 1.3}, warnings=["calibration overlaps the quality text"])
    assert sanity_flags(warned, row("fp16", 1000)) == ["calibration overlaps the quality text"]


@pytest.fixture
def stored(tmp_path):
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    cells = expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[:2]  # SmolLM2 fp16, int8
    store = Store(str(tmp_path / "e.db"))
    for c, samples, weights in ((cells[0], BASE, 1000), (cells[1], QUANT, 400)):
        store.claim(c, lambda status: True)
        store.record(c, {"status": "ok", "weights_bytes": weights, "metrics": {"mc": {"acc": 0.6}},
                         "details": {"bits": 8, "quantized_modules": 210}}, {"mc": samples}, "", 1.0)
    return store, cells


def test_pairing_reads_the_stored_samples_of_both_cells(stored):
    store, cells = stored
    paired = pair_rows(store.cells(), store.samples)
    quant = paired[cells[1].key]
    assert quant.baseline_key == cells[0].key
    assert quant.total["correct_to_wrong"] == 1 and quant.total["wrong_to_correct"] == 1
    assert quant.weights_ratio == 0.4 and quant.flags == []
    assert paired[cells[0].key].total is None  # fp16 is the reference, not compared


def test_results_csv_carries_the_paired_figures(stored):
    store, cells = stored
    csv = to_csv(records_of(store.cells(), store.samples))
    header, *lines = csv.splitlines()
    assert "correct_to_wrong" in header and "mcnemar_p" in header and "kld_mean" in header
    int8 = next(line for line in lines if ",int8," in line)
    cols = dict(zip(header.split(","), int8.split(",")))
    assert cols["correct_to_wrong"] == "1" and cols["mcnemar_p"] == "1.0"


def test_flips_count_right_and_wrong_by_the_tasks_headline_metric():
    """ARC is headlined by acc_norm: a document right by acc but wrong by acc_norm is wrong."""
    record = {"doc_id": 0, "doc_hash": "h", "acc": 1.0, "acc_norm": 0.0, "filtered_resps": [[-1.0, False], [-2.0, False]]}
    assert mc_answers([record], "acc_norm") == {("0", "h"): (False, [-1.0, -2.0])}
    assert mc_answers([record])[("0", "h")][0] is True


def mc_samples(rng, n: int, p_right: float) -> list[dict]:
    out = []
    for i in range(n):
        acc, acc_norm = (float(rng.random() < p_right) for _ in range(2))  # two independent draws
        out.append({"doc_id": i, "doc_hash": f"h{i}", "acc": acc, "acc_norm": acc_norm,
                    "filtered_resps": [[-1.0, False], [-2.0, False]]})
    return out


@pytest.fixture
def three_cells(tmp_path):
    """SmolLM2 fp16, int8 and nf4 of the demo matrix, each with 200 documents of every demo task."""
    import random

    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    cells = expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[:3]
    tasks = {t.task: t.metric for s in suites for t in s.tasks}  # acc_norm for ARC and HellaSwag, acc for the rest
    store = Store(str(tmp_path / "e.db"))
    for c, p_right in zip(cells, (0.6, 0.58, 0.45)):
        rng = random.Random(c.variant)
        samples = {t: mc_samples(rng, 200, p_right) for t in tasks}
        metrics = {t: {m: sum(s[m] for s in ss) / len(ss) for m in ("acc", "acc_norm")} for t, ss in samples.items()}
        store.claim(c, lambda status: True)
        store.record(c, {"status": "ok", "weights_bytes": 1000, "metrics": metrics, "details": {"bits": 8}}, samples, "", 1.0)
    return store, cells, tasks


def test_each_cell_is_compared_with_its_fp16_by_the_engine_on_its_headline_metric(three_cells):
    from evalq.verdicts import compare_documents, document_scores, holm

    store, (fp16, int8, nf4), tasks = three_cells
    paired = pair_rows(store.cells(), store.samples)
    assert paired[fp16.key].comparison is None  # the reference
    # by each task's declared headline (acc and acc_norm differ document by document here)
    scores = {c.key: {t: document_scores(store.samples(c.key, t), m) for t, m in tasks.items()} for c in (fp16, int8, nf4)}
    for c in (int8, nf4):
        direct = compare_documents(scores[c.key], scores[fp16.key])
        got = paired[c.key].comparison
        assert got.suite.diff == pytest.approx(direct.suite.diff) and got.suite.lo == direct.suite.lo
        assert got.suite.recovery == pytest.approx(direct.suite.recovery) and got.suite.n == 200 * len(tasks)
    raw = [paired[c.key].comparison.suite.p for c in (int8, nf4)]
    assert [paired[c.key].p_adjusted for c in (int8, nf4)] == holm(raw)
    # nf4 answers 15 points worse on 1,000 documents: clearly below both gates
    assert paired[nf4.key].comparison.gate(0.99) == "fails" and paired[nf4.key].p_adjusted < 0.001


def test_recovery_and_gates_reach_the_json_csv_and_table(three_cells):
    import json

    from rich.console import Console

    from evalq.results import to_json, to_table

    store, (fp16, int8, nf4), _ = three_cells
    records = records_of(store.cells(), store.samples)
    vs = {r["variant"]: r["paired"]["vs_fp16"] for r in json.loads(to_json(records))}
    assert vs["fp16"] is None and vs["nf4"]["gates"] == {"0.99": "fails", "0.999": "fails"}
    assert vs["nf4"]["suite"]["recovery_hi"] < 0.99 and vs["nf4"]["seed"] and vs["nf4"]["resamples"] == 9_999
    header, *lines = to_csv(records).splitlines()
    cols = dict(zip(header.split(","), next(line for line in lines if ",nf4," in line).split(",")))
    assert cols["gate_99"] == "fails" and float(cols["recovery"]) == pytest.approx(vs["nf4"]["suite"]["recovery"])
    console = Console(width=400, record=True)
    console.print(to_table(records))
    text = console.export_text()
    assert "recovery (CI)" in text and "fails" in text
