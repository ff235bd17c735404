"""The self-contained HTML report (headprune.workbench.report): its own reproduce command recomputes its
numbers, and it opens in real Chromium with every figure drawn and no network request."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from helpers.report import report_data

from headprune.cli import main

CHROMIUM = os.environ.get("HEADPRUNE_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread of a shared machine


def test_the_reports_own_command_reproduces_its_numbers(made, capsys, monkeypatch):
    """A report made over the dashboard's live set names the CLI command that recomputes it: run it."""
    root, bench, keep = made
    bench.score("gradient")
    first = report_data(bench.report(keep, mask_file="mask.json", out="again.html"))
    monkeypatch.chdir(root)
    for command in first["commands"]:
        if command.startswith(("headprune score ", "headprune report ")):
            assert main(shlex.split(command)[1:] + ["--overwrite"]) == 0, command
    again = report_data((root / "again.html").read_text(encoding="utf-8"))
    for side in ("dense", "mask"):
        for key in ("accuracy", "loss", "macro_f1", "heads_kept", "flops_per_token", "n"):
            assert again[side][key] == pytest.approx(first[side][key], rel=1e-5), (side, key)
    assert again["flips"] == first["flips"]


@pytest.mark.browser
def test_the_report_opens_offline_in_chromium_with_every_figure(made, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    _, bench, keep = made
    bench.score("gradient")
    bench.curves(["gradient"], ["one-shot"], [0.0, 0.25, 0.5], seeds=2)
    path = tmp_path / "report.html"
    path.write_text(bench.report(keep), encoding="utf-8")
    requests = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.on("request", lambda r: requests.append(r.url))
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
        plots = page.locator(".js-plotly-plot").count()
        box = page.locator(".js-plotly-plot").first.bounding_box()
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        point = page.locator(".js-plotly-plot .scatterlayer .point").first.bounding_box()
        page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)  # hover stays interactive
        page.wait_for_selector(".hovertext", timeout=10_000)
        hover = page.locator(".hovertext").first.text_content()
        browser.close()
    assert plots == 3  # the mask grid, the gradient heatmap and the curves
    assert box["width"] > 100 and "layer 0, head" in hover and not errors
    assert requests == [path.as_uri()]  # the file itself and nothing else
