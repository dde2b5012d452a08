"""The leaderboard as people use it (issue 17): views in the URL, downloads of the view,
columns, compare, keyboard, accessibility (axe-core), phones, dark mode, charts."""
from __future__ import annotations

import csv
import io
import json
import re

import pytest
from board_fixture import GROUP, MEMBERS, SCREENSHOTS, XSS_NAME, make_group_db

from evalq.leaderboard.render import slug

PAGES = ["index.html", "equal-cost.html", "frontier.html", "history.html", f"models/{slug('Big-13B')}.html",
         f"models/{slug(XSS_NAME)}.html"]
WIDTHS = (375, 768, 1440)

# the text of each visible cell (its value as shown, without the small detail), by row
TABLE_TEXT = """() => Array.from(document.querySelectorAll('table.sortable')).flatMap(t =>
  Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(td => {
    const a = td.querySelector('a'); return (a ? a.textContent : td.childNodes[0].textContent).trim(); })))"""
HEADERS = """() => Array.from(document.querySelector('table.sortable').tHead.rows[0].cells)
  .filter(th => !th.hidden).map(th => th.textContent.trim())"""


def table(page):
    return page.evaluate(TABLE_TEXT)


def open_index(page, site, hash_=""):
    page.goto((site / "index.html").as_uri() + hash_)
    page.wait_for_selector("body[data-ready='1']", state="attached")


def set_column(page, col: str, on: bool):
    if not page.locator("#columns").evaluate("d => d.open"):
        page.click("#columns summary")
    box = page.locator(f"#columns input[data-col='{col}']")
    box.check() if on else box.uncheck()


def test_a_url_with_state_restores_the_same_view(browser, page, site):
    open_index(page, site)
    page.select_option("#f-budget", "16")
    page.fill("#f-search", "13b")
    page.locator("th[data-col='decode'] button").click()
    page.locator("th[data-col='decode'] button").click()  # descending
    set_column(page, "kld", False)
    set_column(page, "hardware", True)
    page.locator("tr", has_text="Big-13B").filter(has_text="gptq-4").locator("input.choose").check()
    page.locator("tr", has_text="Big-13B").filter(has_text="nf4").locator("input.choose").check()
    page.click("#compare-open")
    url, rows, headers = page.url, table(page), page.evaluate(HEADERS)
    compared = page.inner_text("#compare-table")
    assert "#" in url and "sort=decode%3Adesc" in url and "budget=16" in url
    decode = [float(r[headers.index("decode tok/s")]) for r in rows]
    assert decode == [26.0, 16.0, 8.0]  # Big-13B's rows within 16 GB, fastest first
    assert "KLD" not in headers and "hardware" in headers

    other = browser.new_page(viewport={"width": 1200, "height": 900})
    other.goto(url)
    other.wait_for_selector("body[data-ready='1']", state="attached")
    assert other.input_value("#f-budget") == "16" and other.input_value("#f-search") == "13b"
    assert table(other) == rows and other.evaluate(HEADERS) == headers
    assert other.get_attribute("th[data-col='decode']", "aria-sort") == "descending"
    assert other.is_visible("#compare") and other.inner_text("#compare-table") == compared
    other.close()


def test_download_this_view_is_exactly_the_rows_and_columns_on_screen(page, site):
    open_index(page, site)
    page.select_option("#f-variant", "gptq-4")
    page.locator("th[data-col='avg'] button").click()
    set_column(page, "details", True)
    set_column(page, "recovery", False)
    shown, headers = table(page), page.evaluate(HEADERS)
    with page.expect_download() as dl:
        page.click("#view-csv")
    lines = list(csv.reader(io.StringIO(open(dl.value.path(), encoding="utf-8").read())))
    assert lines[0] == headers and lines[1:] == shown and len(shown) == 2
    with page.expect_download() as dl:
        page.click("#view-json")
    data = json.loads(open(dl.value.path(), encoding="utf-8").read())
    assert [[r[h]["text"] for h in headers] for r in data["rows"]] == shown
    assert data["rows"][0]["avg acc %"]["value"] < data["rows"][1]["avg acc %"]["value"]  # the view's order, raw values kept
    assert all(u.startswith(("file://", "blob:")) for u in page.requests)  # made in the page, nothing fetched


def test_columns_can_be_picked_and_reset(page, site):
    open_index(page, site)
    defaults = page.evaluate(HEADERS)
    assert defaults[:2] == ["model", "variant"] and "avg acc %" in defaults and "KLD" in defaults
    assert "McNemar p" not in defaults  # not a default column
    set_column(page, "mcnemar", True)
    set_column(page, "weights", False)
    now = page.evaluate(HEADERS)
    assert "McNemar p" in now and "weights GB" not in now
    assert all(len(r) == len(now) for r in table(page))  # every row has exactly the shown columns
    page.click("#columns-default")
    assert page.evaluate(HEADERS) == defaults


def test_headers_sort_by_keyboard_alone(page, site):
    open_index(page, site)
    for _ in range(80):  # Tab until the accuracy header has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "avg acc %":
            break
    else:
        pytest.fail("the 'avg acc %' header is not reachable by Tab")
    page.keyboard.press("Enter")
    assert page.get_attribute("th[data-col='avg']", "aria-sort") == "ascending"
    assert table(page)[0][:2] == [XSS_NAME, "fp16"]
    page.keyboard.press(" ")
    assert page.get_attribute("th[data-col='avg']", "aria-sort") == "descending"
    assert table(page)[0][:2] == ["Big-13B", "fp16"]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible


def test_compare_puts_chosen_rows_side_by_side_with_differences(page, site):
    open_index(page, site)
    assert page.is_disabled("#compare-open")
    page.locator("tr", has_text="Small-7B").filter(has_text="fp16").locator("input.choose").check()
    page.locator("tr", has_text="Big-13B").filter(has_text="int8").locator("input.choose").check()
    page.click("#compare-open")
    heads = page.eval_on_selector_all("#compare-table thead th", "ths => ths.map(t => t.textContent)")
    assert heads == ["figure", "Small-7B · fp16", "Big-13B · int8"]
    acc = page.locator("#compare-table tr", has=page.locator("th", has_text="avg acc %"))
    assert "54.3" in acc.inner_text() and "59.8" in acc.inner_text() and "Δ vs first +5.5" in acc.inner_text()
    recovery = page.locator("#compare-table tr", has=page.locator("th", has_text="recovery %")).inner_text()
    assert "CI 97.2–101.9" in recovery  # the verdict engine's interval against its fp16
    delta = page.locator("#compare-table tr", has=page.locator("th", has_text="Δ acc vs fp16")).inner_text()
    assert "-0.3 paired 95 % CI -1.7 to +1.1" in delta
    figures = page.eval_on_selector_all("#compare-table tbody th", "ths => ths.map(t => t.textContent)")
    assert {"hardware", "date", "weights from", "McNemar p", "status"} <= set(figures)  # every figure, shown or not
    when = page.locator("#compare-table tr", has=page.locator("th", has_text="date")).inner_text()
    assert re.search(r"\d{4}-\d\d-\d\d", when)
    source = page.locator("#compare-table tr", has=page.locator("th", has_text="weights from")).inner_text()
    assert "org/small-7b @ 000000000000" in source
    page.click("#compare-clear")
    assert page.is_hidden("#compare") and page.is_disabled("#compare-open")


def test_every_page_has_no_serious_accessibility_violation(browser, site):
    from axe_playwright_python.sync_playwright import Axe

    found = []
    for scheme in ("light", "dark"):
        pg = browser.new_page(color_scheme=scheme, viewport={"width": 1200, "height": 900})
        for name in PAGES + ["index.html#compare=1"]:
            pg.goto((site / name.split("#")[0]).as_uri())
            pg.wait_for_selector("body[data-ready='1']", state="attached")
            if "#" in name:  # the compare view and the column picker open
                pg.locator("input.choose").nth(2).check()
                pg.locator("input.choose").nth(3).check()
                pg.click("#compare-open")
                pg.click("#columns summary")
            for d in pg.locator("details").all():
                d.evaluate("d => d.open = true")
            result = Axe().run(pg).response
            assert result["testEngine"]["version"].startswith("4.")
            found += [(scheme, name, v["id"], v["impact"], v["nodes"][0]["html"][:120]) for v in result["violations"]
                      if v["impact"] in ("serious", "critical")]
        pg.close()
    assert found == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_fit_phones_tablets_and_desktops(browser, site, scheme):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        pg = browser.new_page(color_scheme=scheme, viewport={"width": width, "height": 900})
        for name in PAGES:
            pg.goto((site / name).as_uri())
            pg.wait_for_selector("body[data-ready='1']", state="attached")
            overflow = pg.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name} at {width} px ({scheme}) scrolls sideways by {overflow} px"
            for svg in pg.locator("svg.chart").all():
                box = svg.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= width  # charts scale to the viewport
            pg.screenshot(path=str(SCREENSHOTS / f"{name.replace('/', '_')}-{width}-{scheme}.png"), full_page=True)
        pg.goto((site / "index.html").as_uri())
        wrap = pg.locator("div.scroll", has=pg.locator("table.sortable")).first
        first = pg.locator("table.sortable tbody tr td").first
        if width == 375:  # the table scrolls inside its box, its first column stays
            assert wrap.evaluate("w => w.scrollWidth > w.clientWidth")
            x = first.bounding_box()["x"]
            wrap.evaluate("w => w.scrollLeft = 400")
            assert abs(first.bounding_box()["x"] - x) < 1
        pg.close()


def test_dark_mode_follows_the_system_and_the_toggle(browser, site):
    def background(pg):
        return pg.evaluate("getComputedStyle(document.body).backgroundColor")

    pg = browser.new_page(color_scheme="dark")
    pg.goto((site / "index.html").as_uri())
    dark = background(pg)
    assert dark != "rgb(255, 255, 255)"
    pg.click("#theme")  # auto → dark (as the system already is) → light
    assert background(pg) == dark and pg.get_attribute("html", "data-theme") == "dark"
    pg.click("#theme")
    assert background(pg) == "rgb(255, 255, 255)" and pg.text_content("#theme span") == "off"
    pg.goto((site / "frontier.html").as_uri())  # the choice is kept across pages
    assert background(pg) == "rgb(255, 255, 255)"
    text = pg.evaluate("getComputedStyle(document.querySelector('svg.chart text')).fill")
    pg.click("#theme")  # back to auto: the system's dark
    assert background(pg) == dark
    assert pg.evaluate("getComputedStyle(document.querySelector('svg.chart text')).fill") != text  # charts follow
    pg.close()


def test_chart_points_have_tooltips_on_focus_and_touch_and_a_table(browser, page, site):
    page.goto((site / "frontier.html").as_uri())
    point = page.locator("svg.chart .point").first
    label = point.get_attribute("aria-label")
    point.focus()
    assert page.is_visible("#tooltip") and page.text_content("#tooltip") == label
    page.keyboard.press("Escape")
    assert page.is_hidden("#tooltip")
    n_points = page.locator("svg.chart").first.locator(".point").count()
    page.locator("details.points summary").first.click()
    assert page.locator("details.points").first.locator("tbody tr").count() == n_points
    page.goto((site / "history.html").as_uri())  # the nightly charts too
    first = page.locator("figure").first
    assert first.locator("details.points tbody tr").count() == first.locator("svg .point").count() == 4
    touch = browser.new_page(has_touch=True, viewport={"width": 375, "height": 800})
    touch.goto((site / "frontier.html").as_uri())
    touch.locator("svg.chart .point").nth(1).tap()
    assert touch.is_visible("#tooltip") and "%" in touch.text_content("#tooltip")
    touch.close()


def test_groups_are_headed_by_suite_and_hardware_and_rows_link_their_source(page, site):
    open_index(page, site)
    heading = page.locator("h2.group-title").first
    assert heading.inner_text().startswith("tiny on ")
    group = heading.get_attribute("id").removeprefix("g-")
    assert group not in heading.inner_text().replace("#", "")  # the hash only as the anchor
    assert "evalq_demo_mc (0-shot)" in page.inner_text("p.group")
    footer = page.inner_text("footer")
    assert "evalq 0.1.0" in footer and "matrix fixture" in footer
    page.goto((site / f"models/{slug('Big-13B')}.html").as_uri())
    assert page.get_attribute("p.source a", "href") == "https://huggingface.co/org/big-13b/tree/" + "0" * 40
    assert "hardware · date" in page.inner_text("table.board")


def test_a_groups_subtasks_are_one_click_away(browser, tmp_path):
    from evalq.leaderboard.render import build_from_db

    site = tmp_path / "site"
    build_from_db(make_group_db(tmp_path), site, built_at="x")
    pg = browser.new_page()
    pg.goto((site / "index.html").as_uri())
    pg.wait_for_selector("body[data-ready='1']", state="attached")
    headers = pg.evaluate(HEADERS)
    assert GROUP in headers and not any(m in headers for m in MEMBERS)  # collapsed to the group's score
    pg.locator("table.sortable tbody tr").first.locator("a", has_text="50.0").click()
    pg.wait_for_load_state()
    assert "Grouped-1B" in pg.title() and "local folder /models/grouped-1b" in pg.inner_text("p.source")
    members = pg.locator(f"#subtasks-{slug(GROUP)} details").first
    members.locator("summary").click()
    assert members.inner_text().splitlines()[1:] == ["evalq_demo_mc_easy: 70.0 ± 2.0", "evalq_demo_mc_hard: 30.0 ± 2.0"]
    pg.close()
