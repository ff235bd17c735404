"""The `headprune` sub-commands end to end on a tiny classifier saved to disk and a tiny CSV."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_text import bert_tokenizer, save, tiny_bert

from headprune.cli import main
from headprune.evaluation.loop import evaluate
from headprune.model.layout import kept_mask
from headprune.model.schema import read_mask, write_mask
from headprune.model.storage import load_pruned
from headprune.presets import load_model
from headprune.recovery.lsq import lsq_recover
from headprune.sources.batches import make_batches
from headprune.sources.data import load_data

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["good movie,positive", "awful car,negative", "the car,neutral", "love this,positive", "bad bad,negative",
        "great fine,positive", "hate this car,negative", "a movie,neutral", "ok the car,neutral", "not good,negative"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tok = bert_tokenizer(root / "tok")
    model = tiny_bert(tok, label_names=["negative", "neutral", "positive"])
    folder = save(model, tok, root / "model")
    csv = root / "reviews.csv"
    csv.write_text("review,sentiment\n" + "\n".join(ROWS * 3) + "\n")
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = False
    write_mask(root / "mask.json", keep, model, model_id=str(folder))
    return folder, csv, root / "mask.json"


@pytest.fixture(scope="module")
def split_csv(tmp_path_factory):
    """The same rows with a `split` column: 30 train, 10 validation, 10 test examples."""
    path = tmp_path_factory.mktemp("splits") / "reviews.csv"
    rows = [f"{r},train" for r in ROWS * 3] + [f"{r},validation" for r in ROWS] + [f"{r},test" for r in ROWS]
    path.write_text("review,sentiment,split\n" + "\n".join(rows) + "\n")
    return path


def run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    return code, out


def test_score_writes_a_scores_file(workload, capsys, tmp_path):
    folder, csv, _ = workload
    code, out = run(capsys, ["score", "--model", str(folder), "--data", str(csv), "--metric", "gradient",
                             "--out", str(tmp_path / "s.json"), "--normalise-layers", "--json", "-q", "--no-cache"])
    assert code == 0, out.err
    result = json.loads(out.out)
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["metric"] == "gradient" and record["model_id"] == str(folder) and record["options"]["normalise_layers"]
    assert record["scores"] == result["scores"] and len(record["scores"]) == 2 and len(record["scores"][0]) == 4
    code, out = run(capsys, ["score", "--model", str(folder), "--data", str(csv), "-q"])
    assert code == 0 and "layer" in out.out


def test_prune_by_fraction_and_by_mask(workload, capsys, tmp_path):
    folder, csv, mask = workload
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--fraction", "0.5",
                             "--out", str(tmp_path / "half"), "--mask-out", str(tmp_path / "half.json"), "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["heads_kept"] == 4 and result["parameters_after"] < result["parameters_before"]
    assert int(kept_mask(load_pruned(tmp_path / "half")).sum()) == 4
    assert load_model(str(tmp_path / "half")).tokenizer is not None
    code, out = run(capsys, ["prune", "--model", str(folder), "--mask", str(mask), "--out", str(tmp_path / "m"), "-q"])
    assert code == 0 and "heads kept  5 of 8" in out.out
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--budget", "100",
                             "--out", str(tmp_path / "b"), "--json", "-q"])
    assert code == 0, out.err
    assert json.loads(out.out)["heads_kept"] == 2  # a budget of 100 points allows everything but 1 head per layer



@pytest.mark.parametrize("method", ["weights", "scales"])
def test_prune_iterative_recovered_budget_saves_the_recovered_model(workload, split_csv, capsys, tmp_path, method):
    folder, _, _ = workload
    csv = split_csv
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--budget", "100", "--iterative",
                             "0.25", "--recover", method, "--calib-split", "train", "--out", str(tmp_path / "r"),
                             "--mask-out", str(tmp_path / "r.json"), "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["heads_kept"] == 2 and result["recovered"] == method and result["iterative_step"] == 0.25
    assert result["calib_split"] == "train" and result["recover_target"] == "dense"  # a BERT model: post-norm
    loaded = load_model(str(folder))
    keep = read_mask(tmp_path / "r.json", loaded.model)
    df = load_data(str(csv), split="validation", label2id=loaded.label2id)
    batches = make_batches(loaded.tokenizer, df, "classification", batch_size=32, max_length=128)
    calib = make_batches(loaded.tokenizer, load_data(str(csv), split="train", label2id=loaded.label2id),
                         "classification", batch_size=32, max_length=128)
    with lsq_recover(loaded.model, keep, calib, method=method).applied(loaded.model):
        expected = evaluate(loaded.model, batches)["loss"]
    assert evaluate(load_pruned(tmp_path / "r"), batches)["loss"] == pytest.approx(expected, rel=1e-4)
    assert evaluate(loaded.model, batches, keep)["loss"] != pytest.approx(expected, rel=1e-4)


def test_prune_budget_iterative_ranking_can_stop_early(workload, capsys, tmp_path):
    folder, csv, _ = workload
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--budget", "100", "--iterative",
                             "0.25", "--until", "0.25", "--out", str(tmp_path / "u"), "--json", "-q"])
    assert code == 0, out.err
    assert json.loads(out.out)["heads_kept"] == 2  # heads never ranked still go in their last scores' order
    for extra, reason in ((["--until", "0.5"], "add --iterative"), (["--iterative", "0.25", "--until", "1.5"], "(0, 1]")):
        code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--budget", "100", *extra,
                                 "--out", str(tmp_path / "bad")])
        assert code == 2 and reason in out.err and not (tmp_path / "bad").exists()


def test_prune_calib_split_needs_recover(workload, capsys, tmp_path):
    folder, csv, _ = workload
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--fraction", "0.5",
                             "--calib-split", "train", "--out", str(tmp_path / "x")])
    assert code == 2 and "--calib-split" in out.err and not (tmp_path / "x").exists()


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


def test_compress_saves_the_smallest_model_with_its_report_and_resumes(workload, split_csv, capsys, tmp_path):
    folder, _, _ = workload
    argv = ["compress", "--model", str(folder), "--data", str(split_csv), "--max-drop", "20", "--time-budget", "300",
            "--distill-steps", "2", "--polish-steps", "2", "--batch-size", "4", "--out", str(tmp_path / "c"),
            "--json", "-q"]
    code, out = run(capsys, argv)
    assert code == 0, out.err
    result = json.loads(out.out)
    for key in ("heads_removed_frac", "dense_test_acc", "compressed_test_acc", "seconds",
                "retraining_free_heads_removed_frac", "trajectory"):
        assert key in result
    assert result["tested_on"] == "test" and result["examples"]["test"] == 10 and result["examples"]["judge"] == 10
    model = load_pruned(tmp_path / "c")
    assert [row.nonzero().flatten().tolist() for row in kept_mask(model)] == result["kept_heads"]
    report = json.loads((tmp_path / "c" / "compress_report.json").read_text())
    assert report["trajectory"] == result["trajectory"] and report["saved"] == str(tmp_path / "c")
    loaded = load_model(str(folder))
    test = make_batches(loaded.tokenizer, load_data(str(split_csv), split="test", label2id=loaded.label2id),
                        "classification", batch_size=4, max_length=128)
    assert evaluate(model, test)["accuracy"] == pytest.approx(result["compressed_test_acc"])
    assert (tmp_path / "c.compress-state" / "compress_state.json").is_file()
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(split_csv), "--fractions", "0,0.5",
                             "--random-seeds", "0", "--compress-report", str(tmp_path / "c" / "compress_report.json"),
                             "-q"])
    assert code == 0 and "compress (" in out.out and f"{result['heads_kept']:>6}" in out.out
    code, out = run(capsys, argv + ["--resume", "--overwrite"])  # the saved run is complete: the same result again
    assert code == 0, out.err
    again = json.loads(out.out)
    assert again["resumed"] and again["kept_heads"] == result["kept_heads"]
    assert [r["val"] for r in again["trajectory"]] == [r["val"] for r in result["trajectory"]]
    code, out = run(capsys, argv[:-2] + ["-q"])  # a fresh run over existing outputs needs --overwrite
    assert code == 2 and "already exists" in out.err
    code, out = run(capsys, argv + ["--overwrite"])
    assert code == 0 and "compressed_test_acc" in out.out


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


def test_roles_and_curves(workload, capsys):
    folder, csv, _ = workload
    code, out = run(capsys, ["roles", "--model", str(folder), "--data", str(csv), "--json", "-q"])
    assert code == 0, out.err
    roles = json.loads(out.out)["roles"]
    assert all({"layer", "head", "role", "statistic", "value"} <= set(r) for r in roles)
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(csv), "--fractions", "0,0.5",
                             "--random-seeds", "2", "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert [r["heads_kept"] for r in result["curve"]] == [8, 4] and len(result["random"]) == 2
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(csv), "--fractions", "0,0.5", "-q"])
    assert code == 0 and "random" in out.out
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(csv), "--fractions", "0,0.5,0.75",
                             "--mode", "iterative", "--step", "0.25", "--stop-below", "0", "--random-seeds", "0",
                             "--json", "-q"])
    assert code == 0, out.err
    assert [r["heads_kept"] for r in json.loads(out.out)["curve"]] == [8, 4, 2]


def test_bench_runs_a_script_from_the_checkout(capsys):
    code, out = run(capsys, ["bench", "recovery", "--", "--help"])
    assert code == 0, out.err
