"""`headprune report` writes one offline file (plotly.js once, no network) whose numbers equal the Workbench's,
and replaces only a report, only with --overwrite."""
from __future__ import annotations

import html

import pytest
from helpers.report import report_data

from headprune.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread of a shared machine


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
