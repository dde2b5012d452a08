"""`evalq run --until-decided` for real: SmolLM2 in fp16 and int8 through lm-eval on the
tiny suite, in rounds of documents drawn in one seeded order. The fp16 cell runs its
budget; the int8 cell pairs its documents with fp16's as it goes, and what it stored
(documents, stopping reason, the sequence's verdict) is what the results recompute
from the stored per-document records."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evalq.api import prepare
from evalq.cache import cache_dir
from evalq.cli import app
from evalq.measure.until_decided import draw_order
from evalq.store import Store
from evalq.suites import load_suite

MATRIX = """\
name: it-until-decided
models:
  - name: SmolLM2-135M-Instruct
    package: smollm2-135m-instruct
variants: {fp16: {}, int8: {}}
suites: [tiny]
perf: {prompt_tokens: 16, new_tokens: 4, batch_sizes: [1], warmup: 0, repeats: 1, threads: 1}
eval:
  batch_size: 8
  until_decided: {step: 20, max_documents: 40, gates: [0.99]}
timeout_s: 900
"""


@pytest.fixture(scope="module")
def decided_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("until-decided")
    (folder / "m.yaml").write_text(MATRIX)
    for cell in prepare(folder / "m.yaml").cells:  # rounds an earlier session saved would be continued
        (cache_dir("rounds") / f"{cell.rounds_key}.json.gz").unlink(missing_ok=True)
    res = CliRunner().invoke(app, ["run", "--matrix", str(folder / "m.yaml"), "--db", str(folder / "e.db")])
    assert res.exit_code == 0, res.output
    return folder


def test_the_baseline_runs_its_budget_in_the_seeded_order(decided_run):
    store = Store(str(decided_run / "e.db"))
    rows = {r.variant: r for r in store.cells()}
    fp16 = rows["fp16"].outcome.until_decided
    assert fp16["stop"] == "budget" and fp16["documents"] == 40 and fp16["sequential"] is None
    mc = load_suite("tiny").tasks[0]
    assert fp16["order"][mc.task] == draw_order(mc, rows["fp16"].cell["seed"], lambda _: 120, None)[:40]
    records = store.samples(rows["fp16"].key, mc.task)
    assert sorted(r["doc_id"] for r in records) == sorted(fp16["order"][mc.task])
    assert rows["fp16"].metrics[mc.task]["acc"] == pytest.approx(sum(r["acc"] for r in records) / 40)
    assert "word_perplexity" in rows["fp16"].metrics["evalq_demo_ppl"]  # the perplexity task, whole, once


def test_the_quantized_cell_pairs_as_it_goes_and_its_verdict_is_recomputed(decided_run):
    store = Store(str(decided_run / "e.db"))
    rows = {r.variant: r for r in store.cells()}
    mine = rows["int8"].outcome.until_decided
    assert mine["stop"] in ("decided", "budget") and mine["documents"] in (20, 40)
    assert mine["order"]["evalq_demo_mc"] == rows["fp16"].outcome.until_decided["order"]["evalq_demo_mc"][: mine["documents"]]
    worker_said = mine["sequential"]
    assert worker_said["n"] == mine["documents"] and worker_said["boundary"].startswith("betting")
    res = CliRunner().invoke(app, ["results", "--db", str(decided_run / "e.db"), "--format", "json"])
    assert res.exit_code == 0, res.output
    rec = next(r for r in json.loads(res.output) if r["variant"] == "int8")
    seq = rec["paired"]["vs_fp16"]["sequential"]
    assert seq["gates"]["0.99"] == worker_said["gates"]["0.99"]  # recomputed from the stored records: the same
    assert (seq["recovery_lo"], seq["recovery_hi"]) == (worker_said["recovery_lo"], worker_said["recovery_hi"])
    gate = rec["paired"]["vs_fp16"]["gates"]["0.99"]
    verdict = worker_said["gates"]["0.99"]["verdict"]
    assert gate.startswith(f"{verdict} (decided after") if verdict != "undecided" else gate.startswith(f"undecided at n = {mine['documents']} a task")
    table = CliRunner().invoke(app, ["results", "--db", str(decided_run / "e.db")])
    assert "a task" in table.output


def test_a_larger_budget_continues_where_the_stored_cells_stopped(decided_run):
    (decided_run / "more.yaml").write_text(MATRIX.replace("max_documents: 40", "max_documents: 60")
                                           .replace("variants: {fp16: {}, int8: {}}", "variants: {fp16: {}}"))
    res = CliRunner().invoke(app, ["run", "--matrix", str(decided_run / "more.yaml"), "--db", str(decided_run / "e.db")])
    assert res.exit_code == 0, res.output
    store = Store(str(decided_run / "e.db"))
    rows = sorted((r for r in store.cells() if r.variant == "fp16"), key=lambda r: r.outcome.until_decided["documents"])
    before, after = (r.outcome.until_decided for r in rows)
    assert (before["documents"], after["documents"], after["resumed_at"]) == (40, 60, 40)  # 20 documents evaluated, not 60
    task = "evalq_demo_mc"
    assert after["order"][task][:40] == before["order"][task]
    assert sorted(r["doc_id"] for r in store.samples(rows[1].key, task)) == sorted(after["order"][task])
