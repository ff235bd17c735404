"""Driving the dashboard in Debian's Chromium through Playwright: run `streamlit run app.py`, wait for it to
settle, move between pages and read the head grid, the tiles and the mask in the URL.

Never `playwright install`: the browser is /usr/bin/chromium (apt package `chromium`, installed by .ci/run).
With HEADPRUNE_SHOTS=1 every page is also saved to /tmp/headprune_shots/.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from headprune.workbench.ui_state import decode_mask

CHROMIUM = os.environ.get("HEADPRUNE_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path("/tmp/headprune_shots")
GRID = '[data-testid="hp-head-grid"]'  # the Prune page's head grid (app_pages/_grid.py)


def skip_without_chromium() -> None:
    """Skip the calling test module when Playwright or Debian's Chromium is missing (call at module level)."""
    import pytest

    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(folder: Path, model: str, data: str, env: dict):
    """`streamlit run app.py` on a free port; yields its URL, stops it afterwards."""
    port = free_port()
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
