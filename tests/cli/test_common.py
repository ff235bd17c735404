"""What every sub-command shares (headprune.cli.common): bad input exits 2 with one line, before any work."""
from __future__ import annotations

import pytest
from helpers.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("argv, match", [
    (["finetune", "--mask", "/no/such/mask.json", "--out", "x"], "no such mask file"),
    (["finetune", "--out", "x", "--mask", "{mask}", "--alpha", "2"], "alpha"),
    (["prune", "--out", "x"], "exactly one of --mask, --fraction"),
    (["prune", "--out", "x", "--fraction", "1.5"], "--fraction must lie in"),
    (["prune", "--out", "x", "--fraction", "0.5", "--greedy"], "--greedy refines a --budget"),
    (["prune", "--out", "x", "--fraction", "0.5", "--iterative", "0"], "--iterative is the fraction"),
    (["score", "--metric", "nonsense"], "unknown metric"),
    (["curves", "--stop-below", "1.5"], "--stop-below is a fraction"),
    (["curves", "--compress-report", "/no/such/report.json"], "--compress-report: no such compress report"),
    (["bench", "no-such-bench"], "no benchmark 'no-such-bench'"),
    (["compress", "--out", "x", "--target-heads", "1.5"], "--target-heads: the target is the fraction"),
    (["compress", "--out", "x", "--time-budget", "0"], "--time-budget: the time budget"),
    (["compress", "--out", "x", "--distil-step-fraction", "0"], "--distil-step-fraction: distil_step_fraction"),
    (["compress", "--out", "x", "--max-slices", "0"], "--max-slices"),
    (["compress", "--out", "x"], "--data: compress judges on validation"),
])
def test_bad_input_exits_2_with_one_line(workload, capsys, tmp_path, argv, match):
    folder, csv, mask = workload
    argv = [a.replace("{mask}", str(mask)) for a in argv]
    if argv[0] != "bench":
        argv += ["--model", str(folder), "--data", str(csv), "-q"]
    argv = [a if a != "x" else str(tmp_path / "x") for a in argv]
    code, out = run(capsys, argv)
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headprune: error:") and match in lines[0], out.err
    assert out.out == ""
