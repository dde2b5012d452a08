"""The leaderboard in headless Chromium, from file://."""
from __future__ import annotations

from board_fixture import SCREENSHOTS, XSS_ERROR, XSS_NAME

from evalq.leaderboard.render import slug

PAGES = ["index.html", "equal-cost.html", "frontier.html", f"models/{slug('Big-13B')}.html", f"models/{slug(XSS_NAME)}.html"]


def visible_rows(page):
    return page.eval_on_selector_all(
        "table.board tbody tr:not([hidden])",
        "rows => rows.map(r => [r.cells[0].querySelector('a').textContent, r.cells[1].textContent.trim()])")


def test_every_page_loads_offline_without_errors_and_is_photographed(page, site):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in PAGES:
        page.goto((site / name).as_uri())
        page.wait_for_selector("body[data-ready='1']")
        page.screenshot(path=str(SCREENSHOTS / (name.replace("/", "_") + ".png")), full_page=True)
    assert page.problems == []
    assert page.requests and all(u.startswith("file://") for u in page.requests), [u for u in page.requests if not u.startswith("file://")]


def test_sorting_a_column_reorders_rows(page, site):
    page.goto((site / "index.html").as_uri())
    header = page.locator("table.board th", has_text="avg acc %").locator("button")
    header.click()
    ascending = visible_rows(page)
    assert ascending[0] == [XSS_NAME, "fp16"]  # lowest accuracy first
    header.click()
    descending = visible_rows(page)
    assert descending[0] == ["Big-13B", "fp16"] and descending[1] == ["Big-13B", "int8"]
    assert descending[-1] == [XSS_NAME, "int8"]  # the failed cell, no accuracy, stays last


def test_filters_hide_rows(page, site):
    page.goto((site / "index.html").as_uri())
    assert len(visible_rows(page)) == 10
    page.select_option("#f-variant", "nf4")
    assert visible_rows(page) == [["Big-13B", "nf4"], ["Small-7B", "nf4"]]
    page.select_option("#f-variant", "")
    page.select_option("#f-budget", "8")
    assert {tuple(r) for r in visible_rows(page)} == {("Big-13B", "gptq-4"), ("Small-7B", "gptq-4"), ("Small-7B", "nf4"), (XSS_NAME, "fp16")}
    page.select_option("#f-budget", "")
    page.select_option("#f-family", "other")
    assert {r[0] for r in visible_rows(page)} == {XSS_NAME}
    page.select_option("#f-family", "")
    page.fill("#f-search", "big-13b")
    assert {r[0] for r in visible_rows(page)} == {"Big-13B"}
    assert page.text_content("#shown") == "4 of 10 rows"


def test_equal_cost_names_the_expected_winner(page, site):
    page.goto((site / "equal-cost.html").as_uri())
    at16 = page.locator("section.budget[data-budget='16']")
    assert "Best: Big-13B int8" in at16.locator(".best").text_content()
    verdicts = at16.locator("li.verdict").all_inner_texts()  # as rendered
    assert any(v.startswith("Big-13B int8 (14.60 GB, 59.8 ± 0.9) beats Small-7B fp16 (13.80 GB, 54.3 ± 0.9) by 5.5 points") for v in verdicts), verdicts
    at8 = page.locator("section.budget[data-budget='8']")
    assert "Best: Big-13B gptq-4" in at8.locator(".best").text_content()


def test_xss_payloads_do_not_execute(page, site):
    for name in PAGES:
        page.goto((site / name).as_uri())
        page.wait_for_selector("body[data-ready='1']")
        assert page.evaluate("window.__xss") is None
    assert page.dialogs == []
    page.goto((site / "index.html").as_uri())
    assert XSS_NAME in page.text_content("table.sortable")  # shown as text
    assert XSS_ERROR[:40] in page.text_content("table.sortable")
    assert page.locator("table.sortable img").count() == 0
