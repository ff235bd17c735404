"""The dashboard's fixtures: a tiny workspace (BERT classifier + CSV) and an AppTest on it; for the browser
tests, `streamlit run app.py` servers and a Chromium page that screenshots failures (HEADPRUNE_BROWSER_MODEL /
_DATA run them against another model, e.g. a preset)."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.apptest import APP, TIMEOUT
from helpers.browser import CHROMIUM, serve
from helpers.tiny import tiny_workspace

SLOW_EXAMPLES = 600  # live examples of `slow_server`, 40-80 words each, width 512: an evaluation takes seconds


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny BERT classifier (2 layers x 4 heads) folder and a 96-row 3-class CSV."""
    return tiny_workspace(tmp_path_factory.mktemp("app"))


@pytest.fixture
def app(workspace, monkeypatch, tmp_path):
    """The dashboard under AppTest on `workspace`, with a live set of 64 examples and its own cache."""
    from streamlit.testing.v1 import AppTest

    model_dir, data = workspace
    monkeypatch.setenv("HEADPRUNE_MODEL", str(model_dir))
    monkeypatch.setenv("HEADPRUNE_DATA", str(data))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", "64")
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port with a tiny model (or HEADPRUNE_BROWSER_MODEL); yields its URL."""
    folder = tmp_path_factory.mktemp("browser")
    model, data = os.environ.get("HEADPRUNE_BROWSER_MODEL"), os.environ.get("HEADPRUNE_BROWSER_DATA")
    env = {}
    if not model:
        model, data = (str(p) for p in tiny_workspace(folder))
        env["HEADPRUNE_CACHE"] = str(folder / "cache")
    yield from serve(folder, model, data or "tweets", env)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """The tiny model on a live set large enough that an exact evaluation takes a second or more."""
    folder = tmp_path_factory.mktemp("browser-slow")
    model, data = (str(p) for p in tiny_workspace(folder, rows=SLOW_EXAMPLES, words=(40, 80), hidden=512))
    yield from serve(folder, model, data, {"HEADPRUNE_CACHE": str(folder / "cache"),
                                            "HEADPRUNE_LIVE_EXAMPLES": str(SLOW_EXAMPLES)})


@pytest.fixture
def page(server):
    """A Chromium page; on any failure a full-page screenshot is saved to a temp dir (path printed)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
        pg = context.new_page()
        pg.set_default_timeout(120_000)
        try:
            yield pg
        finally:
            browser.close()


@pytest.fixture
def on_failure(page):
    """Use as `with on_failure:`; screenshots the page when the block raises."""
    class Guard:
        def __enter__(self):
            return page

        def __exit__(self, kind, exc, tb):
            if kind is not None:
                out = Path(tempfile.mkdtemp(prefix="headprune-browser-failure-"))
                try:
                    page.screenshot(path=str(out / "failure.png"), full_page=True)
                    print(f"\nbrowser test failed: screenshot in {out}", file=sys.stderr)
                except Exception as shot_error:  # the browser may be gone; the test's own error matters more
                    print(f"\n(no failure screenshot: {shot_error})", file=sys.stderr)
            return False

    return Guard()
