"""A live server on loopback and Debian's Chromium driven by Playwright.

Screenshots go to tests/artifacts/ (git-ignored), taken during the run."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from portal import create_app

CHROMIUM = os.environ.get("PORTAL_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def live(db_url, tmp_path):
    """The app with the demo data, served on a free loopback port. Yields its base URL."""
    from portal.cli import init_database
    from portal.demo import load_demo

    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "SECRET_KEY": "browser-tests",
                      "RATELIMIT_ENABLED": False})
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        init_database(app)
        with app.extensions["portal.db"].factory() as s:
            load_demo(s, dt.date.today())
            s.commit()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    app.extensions["portal.db"].engine.dispose()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    yield pg
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def login(page, base: str, user: str, password: str = "demo1234") -> None:
    page.goto(base + "/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("main form button[type=submit]")
    page.wait_for_load_state()
