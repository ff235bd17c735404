"""The self-contained HTML report: `headprune report` writes one offline file (plotly.js once, no network), its
numbers equal the Workbench's, its own reproduce command recomputes them, and it opens in real Chromium with
every figure drawn and no network request."""
from __future__ import annotations

import html
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from headprune.cli import main
from headprune.model.schema import write_mask
from headprune.workbench import Workbench, open_workload

CHROMIUM = os.environ.get("HEADPRUNE_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread of a shared machine


def report_data(text: str) -> dict:
    """The numbers block of a report."""
    found = re.search(r'<script type="application/json" id="headprune-report-data">(.*?)</script>', text, re.DOTALL)
    assert found, "no data block in the report"
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny classifier and CSV, a mask, a scores file, and the dashboard's kind of workbench over them (the
    live set: a seeded sample of 64 rows, batches of 64)."""
    from test_app import tiny_workspace

    root = tmp_path_factory.mktemp("report")
    model_dir, data = tiny_workspace(root)
    bench = Workbench(open_workload(str(model_dir), str(data), split=None, default_split="validation", limit=64,
                                    batch_size=64))
    keep = torch.ones(bench.shape, dtype=torch.bool)
    keep[0, :2] = keep[1, 3] = False
    write_mask(root / "mask.json", keep, bench.model, model_id=bench.workload.loaded.model_id)
    return root, bench, keep


def test_cli_report_is_one_offline_file_with_the_workbenchs_numbers(made, capsys):
    root, bench, keep = made
    common = ["--model", bench.workload.loaded.model_id, "--data", bench.workload.data_spec, "--limit", "64",
              "--batch-size", "64"]
    assert main(["score", *common, "--metric", "gradient", "--out", str(root / "scores.json")]) == 0
    out = root / "report.html"
    assert main(["report", *common, "--mask", str(root / "mask.json"), "--scores", str(root / "scores.json"),
                 "--out", str(out)]) == 0
    assert "heads kept" in capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert '<meta name="generator" content="headprune' in text
    assert text.count('<script type="text/javascript">') == 1 and "src=\"http" not in text  # plotly.js inline, once
    assert text.count('class="plotly-graph-div"') == 2  # the mask grid and the gradient heatmap
    data = report_data(text)
    assert data["scores"] == ["gradient"] and data["kept_heads"] == keep.tolist()
    changes = bench.what_changed(None, keep)
    assert data["flips"]["fixed"] == [f.index for f in changes.fixed]
    assert data["flips"]["broken"] == [f.index for f in changes.broken]
    assert data["mask"]["accuracy"] == pytest.approx(bench.exact(keep)["accuracy"])
    assert data["mask"]["loss"] == pytest.approx(bench.exact(keep)["loss"], rel=1e-5)
    assert all(html.escape(f.text) in text for f in changes.broken)
    # an existing report is replaced only with --overwrite, and never a file that is not a report
    assert main(["report", *common, "--mask", str(root / "mask.json"), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["report", *common, "--mask", str(root / "mask.json"), "--out", str(out), "--overwrite"]) == 0
    assert main(["report", *common, "--mask", str(root / "mask.json"), "--out", str(root / "mask.json"),
                 "--overwrite"]) == 2
    assert "never replaces" in capsys.readouterr().err


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
