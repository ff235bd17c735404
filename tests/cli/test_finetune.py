"""`headprune finetune` end to end: a loadable model, resuming, and Ctrl-C saving a checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli import run

from headprune.model.layout import kept_mask
from headprune.model.storage import load_pruned

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]


def test_finetune_writes_a_loadable_model_and_resumes(workload, split_csv, capsys, tmp_path):
    folder, _, mask = workload
    csv = split_csv
    argv = ["finetune", "--model", str(folder), "--data", str(csv), "--mask", str(mask), "--out", str(tmp_path / "ft"),
            "--epochs", "2", "--lr", "1e-3", "--batch-size", "4", "--checkpoint-every", "3", "--json", "-q"]
    code, out = run(capsys, argv)
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["steps"] == 16 and set(result["after"]) == {"val", "test"} and result["dense"]["test"]["n"] == 10
    model = load_pruned(tmp_path / "ft")
    assert int(kept_mask(model).sum()) == 5
    assert (tmp_path / "ft.checkpoints").is_dir()
    code, out = run(capsys, argv + ["--resume", "--no-eval", "--overwrite"])  # resumes from step 15: one more step
    assert code == 0, out.err
    again = json.loads(out.out)
    assert again["start_step"] == 15 and again["steps"] == 16
    resumed = load_pruned(tmp_path / "ft")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))
    code, out = run(capsys, ["finetune", "--model", str(folder), "--data", str(csv), "--mask", str(mask), "--out",
                             str(tmp_path / "ft2"), "--max-steps", "2", "--no-distill", "--lora", "--no-eval", "-q"])
    assert code == 0 and "training    2 steps" in out.out


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_130(workload, tmp_path):
    folder, csv, mask = workload
    argv = [sys.executable, "-m", "headprune", "finetune", "--model", str(folder), "--data", str(csv), "--mask",
            str(mask), "--out", str(tmp_path / "ft"), "--epochs", "1000", "--batch-size", "4", "--no-eval"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    seen = b""
    while b" step " not in seen:  # the progress bar shows steps: training is under way
        chunk = proc.stderr.read1(4096)
        assert chunk, seen.decode(errors="replace")[-2000:]
        seen += chunk
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    stderr = (seen + stderr).decode(errors="replace")
    assert proc.returncode == 130, stderr[-2000:]
    assert "checkpoint saved in" in stderr and "--resume" in stderr and stdout == b""
    assert not (tmp_path / "ft").exists()
    assert list((tmp_path / "ft.checkpoints").glob("step-*"))
