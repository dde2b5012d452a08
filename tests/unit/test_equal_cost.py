"""Equal-cost questions asked until decided (eval.until_decided.compare), read back: the
answer `evalq results` (table and JSON) and the board give is recomputed from the stored
documents in the cell's draw order, not taken from what the worker said."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from evalq import sequential
from evalq.cell import expand
from evalq.cli import app
from evalq.matrix import MatrixError, read_matrix
from evalq.store import Store

MATRIX = """\
name: q
models:
  - {name: Small, hub: org/small, params: 1.0e8}
  - {name: Big, hub: org/big, params: 2.0e8}
variants: {fp16: {}, int8: {}}
suites: [tiny]
eval: {until_decided: {max_documents: 120, compare: [{model: Big, against: Small, margin: 0.05}]}}
"""
TASK = "evalq_demo_mc"


@pytest.fixture
def db(tmp_path) -> str:
    """Small fp16 right on 35 % of 120 documents, Big fp16 on 80 %, Big int8 on 70 %, having
    stopped after 100 documents of its draw order; the worker's stored verdict is a lie."""
    (tmp_path / "m.yaml").write_text(MATRIX)
    matrix, suites = read_matrix(tmp_path / "m.yaml")
    by = {(c.model.display_name, c.variant): c for c in expand(matrix, suites, lambda spec: "0" * 40, device="cpu")}
    rng = np.random.default_rng(1)
    order = [int(d) for d in rng.permutation(120)]
    store = Store(str(tmp_path / "e.db"))
    for (name, variant), rate, n in ((("Small", "fp16"), 0.35, 120), (("Big", "fp16"), 0.8, 120), (("Big", "int8"), 0.7, 100)):
        right = rng.random(120) < rate
        records = [{"doc_id": d, "doc_hash": f"h{d}", "acc": float(right[d])} for d in order[:n]]
        until = {"documents": n, "budget": 120, "stop": "decided" if n < 120 else "budget", "order": {TASK: order[:n]},
                 "equal_cost": {"Small": {"verdict": "worse"}} if variant == "int8" else {}}
        store.record(by[(name, variant)], {"status": "ok", "dtype": "bfloat16", "weights_bytes": 10**8, "peak_memory_bytes": 5 * 10**8,
                                           "metrics": {TASK: {"acc": float(np.mean([r["acc"] for r in records])), "acc_stderr": 0.04}},
                                           "until_decided": until}, {TASK: records})
    return str(tmp_path / "e.db")


def expected(db: str) -> sequential.EqualCost:
    store = Store(db, read_only=True)
    rows = {(r.model, r.variant): r for r in store.cells()}
    scores = {k: {str(s["doc_id"]): s["acc"] for s in store.samples(r.key, TASK)} for k, r in rows.items()}
    order = rows[("Big", "int8")].outcome.until_decided["order"][TASK]
    x = np.array([[scores[("Big", "int8")][str(d)]] for d in order])
    y = np.array([[scores[("Small", "fp16")][str(d)]] for d in order])
    return sequential.equal_cost(x, y, "Small", 0.05)


def test_results_recompute_the_answer_from_the_stored_documents(db):
    want = expected(db)
    assert want.verdict == "better" and want.n == 100  # not the "worse" the stored outcome claims
    res = CliRunner().invoke(app, ["results", "--db", db, "--format", "json"])
    assert res.exit_code == 0, res.output
    rec = {(r["model"], r["variant"]): r for r in json.loads(res.output)}
    got = rec[("Big", "int8")]["paired"]["equal_cost"]["Small"]
    assert (got["verdict"], got["lo"], got["hi"], got["decided_at"]) == (want.verdict, want.lo, want.hi, want.decided_at)
    assert "equal_cost" not in rec[("Small", "fp16")]["paired"] and "equal_cost" not in rec[("Big", "fp16")]["paired"]
    table = CliRunner().invoke(app, ["results", "--db", db])
    assert f"Big int8: better than Small fp16, {100 * want.difference:+.1f} points" in table.output
    assert f"decided after {want.decided_at} documents a task" in table.output


def test_the_board_states_the_answer_on_its_first_screen(db, tmp_path):
    res = CliRunner().invoke(app, ["leaderboard", "build", "--db", db, "--out", str(tmp_path / "site")])
    assert res.exit_code == 0, res.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert f"Asked until decided: Big int8 is better than Small fp16, {100 * expected(db).difference:+.1f} points" in index
    assert "Asked until decided: Big int8 is better than Small fp16" in (tmp_path / "site" / "equal-cost.html").read_text()


@pytest.mark.parametrize("question, message", [
    ("{model: Big, against: Tiny}", "names 'Tiny', which is not a model of this matrix (Small, Big)"),
    ("{model: Big, against: Big}", "'Big' against itself"),
    ("{model: Small, against: Big}", "list 'Big' before 'Small' in models"),
])
def test_a_question_naming_a_model_wrongly_is_refused(tmp_path, question, message):
    (tmp_path / "m.yaml").write_text(MATRIX.replace("[{model: Big, against: Small, margin: 0.05}]", f"[{question}]"))
    with pytest.raises(MatrixError, match="eval.until_decided.compare") as err:
        read_matrix(tmp_path / "m.yaml")
    assert message in str(err.value)
