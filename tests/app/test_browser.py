"""End to end in a real browser: Playwright driving Debian's Chromium against `streamlit run app.py` on a tiny model.

Never `playwright install`: the browser is /usr/bin/chromium (apt package `chromium`, installed by .ci/run).
Screenshots go to a temp dir on failure (the path is printed); with HEADPRUNE_SHOTS=1 every page is also
saved to /tmp/headprune_shots/. HEADPRUNE_BROWSER_MODEL / _DATA run it against another model (a preset).
The servers, the page and the screenshot guard are fixtures in tests/app/conftest.py; the page readers are in
helpers/browser.py.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers.browser import (
    GRID,
    cell,
    go,
    grid_point,
    grid_states,
    metric_value,
    removed_heads,
    shoot,
    skip_without_chromium,
    url_removed,
    wait_idle,
)

pytestmark = pytest.mark.browser
skip_without_chromium()


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
    assert re.fullmatch(r"(\d+) / \1", metric_value(pg, "heads kept"))  # all kept: the walkthrough masks its own
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
