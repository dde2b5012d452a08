"""The leaderboard's fixture site and a headless Chromium for the browser tests."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from board_fixture import CHROMIUM, make_fixture_db  # noqa: E402


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory) -> str:
    return make_fixture_db(tmp_path_factory.mktemp("board"))


@pytest.fixture(scope="session")
def site(fixture_db, tmp_path_factory) -> Path:
    from evalq.leaderboard.render import build_from_db

    out = tmp_path_factory.mktemp("site")
    build_from_db(fixture_db, out, budgets_gb=[8, 16, 24, 48, 80], built_at="2026-11-22 00:00 UTC")
    return out


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page that records console errors, page errors, dialogs and every request."""
    pg = browser.new_page(viewport={"width": 1500, "height": 1000})
    pg.problems, pg.dialogs, pg.requests = [], [], []
    pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    pg.close()
