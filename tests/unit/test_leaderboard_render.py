"""Rendering is a pure function of the database, and escapes what users control."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from board_fixture import XSS_NAME, make_fixture_db  # noqa: E402

from evalq.leaderboard.model import default_budgets, to_row, verdict  # noqa: E402
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


def test_verdict_needs_the_difference_to_exceed_the_combined_stderr(fixture_db):
    rows = {(r.model, r.variant): to_row(r) for r in Store(fixture_db).cells()}
    v = verdict(rows[("Big-13B", "int8")], rows[("Small-7B", "fp16")])
    assert v.significant and v.winner.model == "Big-13B" and round(v.difference, 1) == 5.5
    close = verdict(rows[("Small-7B", "int8")], rows[("Small-7B", "fp16")])  # 0.2 points apart, ±1.3
    assert not close.significant


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
