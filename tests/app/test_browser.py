"""End to end in a real browser: Playwright driving Debian's Chromium against `streamlit run app.py` on a tiny model.

Never `playwright install`: the browser is /usr/bin/chromium (apt package `chromium`, installed by .ci/run).
Screenshots go to a temp dir on failure (the path is printed); with HEADPRUNE_SHOTS=1 every page is also
saved to /tmp/headprune_shots/. HEADPRUNE_BROWSER_MODEL / _DATA run it against another model (a preset).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from headprune.workbench.ui_state import decode_mask

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("HEADPRUNE_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path("/tmp/headprune_shots")
SLOW_EXAMPLES = 600  # live examples of `slow_server`, 40-80 words each, width 512: an evaluation takes seconds
GRID = '[data-testid="hp-head-grid"]'  # the Prune page's head grid (app_pages/_grid.py)
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(folder: Path, model: str, data: str, env: dict):
    """`streamlit run app.py` on a free port; yields its URL, stops it afterwards."""
    port = _free_port()
    log = open(folder / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--", "--model", model, "--data", data],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env},
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((folder / "streamlit.log").read_text())
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port with a tiny model (or HEADPRUNE_BROWSER_MODEL); yields its URL."""
    folder = tmp_path_factory.mktemp("browser")
    model, data = os.environ.get("HEADPRUNE_BROWSER_MODEL"), os.environ.get("HEADPRUNE_BROWSER_DATA")
    env = {}
    if not model:
        from test_app import tiny_workspace

        model, data = (str(p) for p in tiny_workspace(folder))
        env["HEADPRUNE_CACHE"] = str(folder / "cache")
    yield from _serve(folder, model, data or "tweets", env)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """The tiny model on a live set large enough that an exact evaluation takes a second or more."""
    from test_app import tiny_workspace

    folder = tmp_path_factory.mktemp("browser-slow")
    model, data = (str(p) for p in tiny_workspace(folder, rows=SLOW_EXAMPLES, words=(40, 80), hidden=512))
    yield from _serve(folder, model, data, {"HEADPRUNE_CACHE": str(folder / "cache"),
                                            "HEADPRUNE_LIVE_EXAMPLES": str(SLOW_EXAMPLES)})


@pytest.fixture
def page(server):
    """A Chromium page; on any failure a full-page screenshot is saved to a temp dir (path printed)."""
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


def wait_idle(pg, settle: float = 0.6) -> None:
    """Until Streamlit has finished running the script, nothing is stale or spinning, and the head grid (if shown)
    has no click waiting for the server; steady for `settle` seconds."""
    pg.wait_for_selector('[data-testid="stApp"]')
    app = pg.locator('[data-testid="stApp"]')

    def idle() -> bool:
        return (app.get_attribute("data-test-script-state") == "notRunning"
                and pg.locator('[data-testid="stSpinner"], [data-stale="true"], [data-testid="stSkeleton"]').count() == 0
                and pg.locator(f'{GRID}:not([data-pending="0"])').count() == 0)

    end = time.time() + 180
    while time.time() < end:
        if idle():
            time.sleep(settle)
            if idle():
                return
        time.sleep(0.2)
    raise TimeoutError("the app kept running for 3 minutes")


def shoot(pg, name: str) -> None:
    if os.environ.get("HEADPRUNE_SHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def go(pg, title: str) -> None:
    pg.get_by_role("link", name=re.compile(title)).first.click()
    pg.wait_for_selector(f'h1:has-text("{HEADINGS[title]}")', timeout=60_000)
    wait_idle(pg)


HEADINGS = {"Learn": "How many attention heads", "Importance": "Head importance", "Prune": "Prune heads by hand",
            "Curves": "Pruning curves", "Export": "Export"}


def metric_value(pg, label: str) -> str:
    """The value of the st.metric labelled `label` (waits until it is there)."""
    script = """(label) => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')].find(
        m => m.querySelector('[data-testid="stMetricLabel"]').innerText.trim() === label);
        return m ? m.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null; }"""
    pg.wait_for_function(f"(label) => ({script})(label) !== null", arg=label, timeout=60_000)
    return pg.evaluate(script, label)


def cell(pg, layer: int, head: int):
    return pg.locator(f'{GRID} [data-layer="{layer}"][data-head="{head}"]')


def grid_point(pg, layer: int, head: int) -> tuple[float, float]:
    """Screen position (centre) of head (layer, head) on the Prune page's grid."""
    box = cell(pg, layer, head).bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def grid_states(pg) -> dict[tuple[int, int], str]:
    """(layer, head) -> what the grid draws: kept, removed, pending-kept or pending-removed (not applied yet)."""
    cells = pg.locator(f"{GRID} [data-layer]").evaluate_all(
        "cells => cells.map(c => [Number(c.dataset.layer), Number(c.dataset.head), c.dataset.state])")
    return {(layer, head): state for layer, head, state in cells}


def removed_heads(pg) -> list[list[int]]:
    """Heads the grid draws as removed by the server (hollow, crossed); pending ones are not."""
    return [[layer, head] for (layer, head), state in sorted(grid_states(pg).items()) if state == "removed"]


def url_removed(pg) -> list[list[int]]:
    """Heads the mask in the page's URL removes."""
    mask = decode_mask(parse_qs(urlparse(pg.url).query)["mask"][0])
    return sorted((~mask).nonzero().tolist())


def test_click_a_head_see_accuracy_change_keep_mask_across_pages_download_it(on_failure, server):
    with on_failure as pg:
        run_the_tour(pg, server)


def run_the_tour(pg, server) -> None:
    pg.goto(server)
    pg.get_by_text("layers × heads").first.wait_for()  # the model is loaded (sidebar)
    wait_idle(pg)
    tiny = not os.environ.get("HEADPRUNE_BROWSER_MODEL")  # a real model: the core path only (minutes per step)
    for button, result in () if not tiny else (("Score the heads", "Scored"), ("Got it", "Remove the least important half ("),
                           ("Remove the least important half", " with "),
                           ("Remove a random half", "random half removed"), ("Recover", "heads, recovered")):
        pg.get_by_role("button", name=re.compile(re.escape(button))).first.click()  # the walkthrough, one click a step
        pg.get_by_text(result).first.wait_for(timeout=180_000)
        wait_idle(pg)
    shoot(pg, "1-learn")

    go(pg, "Importance")
    pg.get_by_text("importance per head").first.wait_for(timeout=180_000)  # the heatmap (scored on first visit)
    wait_idle(pg)
    shoot(pg, "2-importance")

    go(pg, "Prune")
    pg.locator(f"{GRID} [data-layer]").first.wait_for()  # the head grid
    assert metric_value(pg, "heads kept").startswith("8 / 8") or "/" in metric_value(pg, "heads kept")
    total = metric_value(pg, "heads kept").split("/")[1].strip()
    before_loss = metric_value(pg, "loss")
    assert removed_heads(pg) == []

    x, y = grid_point(pg, 1, 2)
    pg.mouse.move(x, y)
    time.sleep(0.3)  # as a user would: hover, then click
    started = time.perf_counter()
    pg.mouse.click(x, y)
    pg.wait_for_function("""([total, before]) => {
        const value = label => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')].find(
            m => m.querySelector('[data-testid="stMetricLabel"]').innerText.trim() === label);
            return m ? m.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null; };
        return value('heads kept') === (Number(total) - 1) + ' / ' + total; }""", arg=[total, before_loss],
                         timeout=120_000)  # the tiles are drawn after the exact evaluation, never before
    seconds = time.perf_counter() - started
    wait_idle(pg, settle=0.3)
    server_side = pg.get_by_text(re.compile(r"^Exact on \d+ examples")).first.inner_text()
    print(f"\ntoggle-to-exact-metrics in the browser: {seconds:.2f} s (server: {server_side})", file=sys.stderr)
    (Path(tempfile.gettempdir()) / "headprune_toggle_seconds.txt").write_text(f"{seconds:.3f}\n")
    if tiny:  # the tiny model's heads all matter (a real one's may not, to 3 decimals)
        assert metric_value(pg, "loss") != before_loss
    assert [1, 2] in removed_heads(pg)  # drawn as removed (hollow crossed square)
    assert "mask=" in pg.url

    assert url_removed(pg) == removed_heads(pg)

    # dragging a rectangle toggles a block: layer 0, heads 0-1
    (x0, y0), (x1, _) = grid_point(pg, 0, 0), grid_point(pg, 0, 1)
    pg.mouse.move(x0 - 12, y0 - 12)
    pg.mouse.down()
    pg.mouse.move(x1 + 12, y0 + 12, steps=10)
    pg.mouse.up()
    pg.wait_for_function("""(want) => [...document.querySelectorAll('[data-testid="stMetric"]')].some(
        m => m.innerText.includes('heads kept') && m.innerText.includes(want))""", arg=f"{int(total) - 3} / {total}")
    wait_idle(pg)
    assert [0, 0] in removed_heads(pg) and [0, 1] in removed_heads(pg)
    pg.get_by_role("button", name=re.compile("Undo")).click()  # undo the block: back to one head removed
    pg.wait_for_function("""(want) => [...document.querySelectorAll('[data-testid="stMetric"]')].some(
        m => m.innerText.includes('heads kept') && m.innerText.includes(want))""", arg=f"{int(total) - 1} / {total}")
    wait_idle(pg)
    shoot(pg, "3-prune")

    go(pg, "Curves")
    if tiny:
        pg.get_by_role("button", name="Compute curves").click()
        pg.locator('.js-plotly-plot').first.wait_for(timeout=300_000)
        wait_idle(pg)
    shoot(pg, "4-curves")
    go(pg, "Prune")
    assert [1, 2] in removed_heads(pg)  # the mask survived the page switch
    assert metric_value(pg, "heads kept").startswith(f"{int(total) - 1} / ")
    pg.get_by_role("button", name="Recover", exact=True).click()  # least-squares refit of this mask
    pg.get_by_text("after recovery (weights)").first.wait_for(timeout=180_000)
    pg.get_by_text(re.compile("^Calibrated on ")).first.wait_for()
    wait_idle(pg)

    go(pg, "Export")
    assert pg.get_by_text("Include the least-squares recovery (weights").first.is_visible()
    shoot(pg, "5-export")
    with pg.expect_download() as info:
        pg.get_by_role("button", name=re.compile("Download mask JSON")).click()
    record = json.loads(Path(info.value.path()).read_text())
    assert record["schema"] == "headprune.mask/1"
    assert 2 not in record["kept_heads"][1] and record["heads_kept"] == int(total) - 1
    meta = record["meta"]
    assert meta["model"]["fingerprint"] and meta["data"]["fingerprint"]
    assert meta["before"]["loss"] != meta["after"]["loss"] and meta["versions"]["torch"]


def open_prune(pg, url: str) -> tuple[int, int]:
    """Open the Prune page at `url` (with or without a mask) and wait until it is idle; returns (layers, heads)."""
    pg.goto(url)
    pg.locator(f"{GRID} [data-layer]").first.wait_for(timeout=180_000)
    wait_idle(pg)
    pg.get_by_text(re.compile(r"^Exact on \d+ examples")).first.wait_for(timeout=180_000)
    layers, heads = (max(ix) + 1 for ix in zip(*grid_states(pg)))
    return layers, heads


def click_heads(pg, heads, gap: float) -> None:
    """Click each head, `gap` seconds apart; every point is aimed before the first click, as a user aims at what
    the page shows (nothing may move under the pointer meanwhile)."""
    points = [grid_point(pg, layer, head) for layer, head in heads]
    for i, (x, y) in enumerate(points):
        if i and gap:
            time.sleep(gap)
        pg.mouse.click(x, y)


def assert_shows_removed(pg, removed, total: int) -> None:
    """The grid, the 'heads kept' tile and the mask in the URL all say exactly `removed` are removed."""
    want = sorted([layer, head] for layer, head in removed)
    states = grid_states(pg)
    assert not [lh for lh, state in states.items() if state.startswith("pending")], states
    assert removed_heads(pg) == want
    assert metric_value(pg, "heads kept") == f"{total - len(want)} / {total}"
    assert url_removed(pg) == want


@pytest.mark.parametrize("gap", [0.0, 0.3], ids=["back-to-back", "0.3s-apart"])
def test_quick_clicks_all_count_and_the_link_opens_the_mask_the_page_shows(on_failure, server, gap):
    """Two, then three heads clicked in quick succession: every click is applied, in the grid, the tiles and the
    URL alike, and the link opens that same mask in a new session."""
    with on_failure as pg:
        layers, heads = open_prune(pg, f"{server}/prune")
        total = layers * heads
        for clicked in ([(0, 0), (layers - 1, heads - 1)], [(0, 1), (layers - 1, 0), (0, heads - 1)]):
            click_heads(pg, clicked, gap)
            wait_idle(pg)
            assert_shows_removed(pg, clicked, total)
            fresh = pg.context.new_page()  # a new browser session opening the link
            open_prune(fresh, pg.url)
            assert_shows_removed(fresh, clicked, total)
            fresh.close()
            pg.get_by_role("button", name="Reset", exact=True).click()
            wait_idle(pg)
            assert_shows_removed(pg, [], total)


def test_clicks_made_while_an_evaluation_runs_are_queued_then_applied(on_failure, slow_server):
    """A click during an exact evaluation (seconds here: a large live set) shows at once as pending and is applied
    once the evaluation is done, and so is a drag over a block made then."""
    with on_failure as pg:
        layers, heads = open_prune(pg, f"{slow_server}/prune")
        total = layers * heads
        app = pg.locator('[data-testid="stApp"]')
        click_heads(pg, [(0, 0)], 0)
        pg.get_by_text("Computing the exact value").first.wait_for()
        assert app.get_attribute("data-test-script-state") == "running"
        click_heads(pg, [(layers - 1, heads - 1)], 0)
        (x0, y0), (x1, y1) = grid_point(pg, 0, 1), grid_point(pg, 0, 2)
        pg.mouse.move(x0 - 8, y0 - 8)
        pg.mouse.down()
        pg.mouse.move(x1 + 8, y1 + 8, steps=5)
        pg.mouse.up()
        assert app.get_attribute("data-test-script-state") == "running"  # all of it happened during the evaluation
        states = grid_states(pg)
        assert [states[lh] for lh in ((layers - 1, heads - 1), (0, 1), (0, 2))] == ["pending-removed"] * 3
        wait_idle(pg)
        assert_shows_removed(pg, [(0, 0), (layers - 1, heads - 1), (0, 1), (0, 2)], total)
        server_side = pg.get_by_text(re.compile(r"^Exact on \d+ examples")).first.inner_text()
        print(f"\nclicks queued during an evaluation, then applied (last evaluation: {server_side})", file=sys.stderr)
        shoot(pg, "6-queued-clicks")


def test_the_keyboard_moves_over_the_grid_and_toggles_heads(on_failure, server):
    with on_failure as pg:
        layers, heads = open_prune(pg, f"{server}/prune")
        cell(pg, 0, 0).focus()
        pg.keyboard.press("Space")
        pg.keyboard.press("ArrowRight")
        pg.keyboard.press("ArrowDown")
        pg.keyboard.press("Enter")
        wait_idle(pg)
        assert_shows_removed(pg, [(0, 0), (1, 1)], layers * heads)
        pg.keyboard.press("Space")  # the focus stayed on (1, 1) through the rerun: it comes back
        wait_idle(pg)
        assert_shows_removed(pg, [(0, 0)], layers * heads)
