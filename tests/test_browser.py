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

import pytest

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("HEADPRUNE_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path("/tmp/headprune_shots")
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port with a tiny model (or HEADPRUNE_BROWSER_MODEL); yields its URL."""
    folder = tmp_path_factory.mktemp("browser")
    model, data = os.environ.get("HEADPRUNE_BROWSER_MODEL"), os.environ.get("HEADPRUNE_BROWSER_DATA")
    if not model:
        from test_app import tiny_workspace

        model, data = (str(p) for p in tiny_workspace(folder))
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if not os.environ.get("HEADPRUNE_BROWSER_MODEL"):
        env["HEADPRUNE_CACHE"] = str(folder / "cache")
    log = open(folder / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--", "--model", model, "--data", data or "tweets"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((folder / "streamlit.log").read_text())
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


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
    """Until Streamlit has finished running the script (no 'Running…' status) and the page is steady."""
    pg.wait_for_selector('[data-testid="stApp"]')
    end = time.time() + 180
    while time.time() < end:
        running = pg.locator('[data-testid="stStatusWidget"]').count() > 0 and \
            pg.locator('[data-testid="stStatusWidget"]').first.is_visible()
        busy = pg.locator('[data-testid="stSpinner"], [data-stale="true"], [data-testid="stSkeleton"]').count() > 0
        if not running and not busy:
            time.sleep(settle)
            if pg.locator('[data-testid="stStatusWidget"]').count() == 0 or \
                    not pg.locator('[data-testid="stStatusWidget"]').first.is_visible():
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


def grid_point(pg, layer: int, head: int) -> tuple[float, float]:
    """Screen position of head (layer, head) on the Prune page's Plotly grid (data -> pixel via plotly's axes)."""
    return pg.evaluate("""([layer, head]) => {
        const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g => g.data && g.data.length >= 3
                    && g.data[0].customdata !== undefined);
        const fl = gd._fullLayout, box = gd.getBoundingClientRect();
        return [box.left + fl.xaxis._offset + fl.xaxis.d2p(head), box.top + fl.yaxis._offset + fl.yaxis.d2p(layer)];
    }""", [layer, head])


def removed_heads(pg) -> list[list[int]]:
    return pg.evaluate("""() => {
        const gd = [...document.querySelectorAll('.js-plotly-plot')].find(g => g.data && g.data.length >= 3
                    && g.data[0].customdata !== undefined);
        return gd.data[2].customdata || [];
    }""")


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
    pg.wait_for_selector(".js-plotly-plot .scatterlayer")  # the heatmap grid
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

    # box select toggles a block: pick Box Select in the grid's toolbar, drag over layer 0, heads 0-1
    (x0, y0), (x1, _) = grid_point(pg, 0, 0), grid_point(pg, 0, 1)
    pg.mouse.move(x0, y0)
    pg.locator('.modebar-btn[data-title="Box Select"]').first.click()
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
