"""In a real browser: pin a mask as A, change B, compare them; download the report, open it offline, and check
that the CLI command it names recomputes the same numbers. Same server (tests/app/conftest.py) and page readers
(helpers/browser.py) as test_browser.py."""
from __future__ import annotations

import json
import re
import shlex

import pytest
from helpers.browser import (
    GRID,
    cell,
    go,
    grid_point,
    metric_value,
    shoot,
    skip_without_chromium,
    wait_idle,
)
from helpers.report import report_data

from headprune.cli import main

pytestmark = pytest.mark.browser
skip_without_chromium()


def click_head(pg, layer: int, head: int, kept_after: str) -> None:
    cell(pg, layer, head).scroll_into_view_if_needed()
    x, y = grid_point(pg, layer, head)
    pg.mouse.click(x, y)
    pg.wait_for_function("""(want) => [...document.querySelectorAll('[data-testid="stMetric"]')].some(
        m => m.innerText.includes('heads kept') && m.innerText.includes(want))""", arg=kept_after, timeout=120_000)
    wait_idle(pg)


def test_pin_a_change_b_compare_and_download_the_report(on_failure, server, tmp_path, monkeypatch):
    with on_failure as pg:
        pg.goto(server)
        pg.get_by_text("layers × heads").first.wait_for()
        wait_idle(pg)
        go(pg, "Prune")
        pg.locator(f"{GRID} [data-layer]").first.wait_for()
        total = metric_value(pg, "heads kept").split("/")[1].strip()
        click_head(pg, 1, 2, f"{int(total) - 1} / {total}")
        pg.get_by_role("button", name=re.compile("Pin this mask as A")).click()
        pg.get_by_text(re.compile("^A keeps ")).first.wait_for()
        wait_idle(pg)
        assert "a=" in pg.url
        click_head(pg, 0, 0, f"{int(total) - 2} / {total}")  # B moves on, A stays
        pg.get_by_text("1 head differs between A and B").first.wait_for()
        assert pg.get_by_text(f"A keeps {int(total) - 1} heads, B {int(total) - 2}").first.is_visible()
        assert metric_value(pg, "fixed").isdigit() and metric_value(pg, "broken").isdigit()  # example counts
        shoot(pg, "ab-prune")

        go(pg, "Export")
        go(pg, "Prune")  # the pinned mask survives page switches
        pg.get_by_text("1 head differs between A and B").first.wait_for()
        go(pg, "Export")
        with pg.expect_download() as info:
            pg.get_by_role("button", name=re.compile("Download mask JSON")).click()
        mask_name = info.value.suggested_filename
        info.value.save_as(tmp_path / mask_name)
        wait_idle(pg)  # the mask download reruns the page: click the next button once it has settled
        with pg.expect_download(timeout=180_000) as info:
            pg.get_by_role("button", name=re.compile("Download report")).click()
        report = tmp_path / info.value.suggested_filename
        info.value.save_as(report)

        requests = []
        offline = pg.context.new_page()
        offline.on("request", lambda r: requests.append(r.url))
        offline.goto(report.as_uri())
        offline.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1")
        plots = offline.locator(".js-plotly-plot").count()
        offline.close()
    text = report.read_text(encoding="utf-8")
    assert plots == text.count('class="plotly-graph-div"') >= 1
    assert requests == [report.as_uri()]
    dashboard = report_data(text)
    assert sum(map(sum, dashboard["kept_heads"])) == int(total) - 2
    monkeypatch.chdir(tmp_path)
    for command in dashboard["commands"]:
        if command.startswith(("headprune score ", "headprune report ")):
            assert mask_name in command or command.startswith("headprune score ")
            assert main(shlex.split(command)[1:] + ["--overwrite"]) == 0, command
    cli = report_data((tmp_path / f"{mask_name.removesuffix('.mask.json')}.report.html").read_text(encoding="utf-8"))
    for side in ("dense", "mask"):
        for key in ("accuracy", "loss", "heads_kept", "flops_per_token", "n"):
            assert cli[side][key] == pytest.approx(dashboard[side][key], rel=1e-5), (side, key)
    assert cli["flips"] == dashboard["flips"] and json.dumps(cli["kept_heads"]) == json.dumps(dashboard["kept_heads"])
