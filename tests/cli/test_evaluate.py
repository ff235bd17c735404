"""`headprune eval` end to end on a tiny classifier saved to disk and a tiny CSV."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli import run as run_json
from helpers.texts import REVIEWS
from helpers.tiny import bert_tokenizer, save, tiny_bert, tiny_gpt2, word_tokenizer

from headprune.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
CSV = "review,sentiment\n" + "\n".join(REVIEWS[:5]) + "\n"


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tok = bert_tokenizer(root / "tok")
    folder = save(tiny_bert(tok, label_names=["negative", "neutral", "positive"]), tok, root / "model")
    csv = root / "reviews.csv"
    csv.write_text(CSV)
    return folder, csv


def test_eval_json_prints_exactly_one_object(workload, capsys):
    folder, csv = workload
    code, out = run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)  # the whole of stdout is one JSON object
    assert out.out.count("\n") == 1
    assert {"accuracy", "macro_f1", "loss", "n", "seconds", "task", "model"} <= set(result)
    assert result["n"] == 5 and 0 <= result["accuracy"] <= 1 and result["task"] == "classification"


def test_eval_summary_and_mask(workload, capsys, tmp_path):
    from headprune.model.schema import write_mask
    from headprune.presets import load_model

    folder, csv = workload
    code, out = run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "-q"])
    assert code == 0 and "accuracy" in out.out and "loss" in out.out
    dense = json.loads(run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "--json", "-q"])[1].out)
    loaded = load_model(str(folder))
    keep = torch.ones(2, 4, dtype=torch.bool)
    write_mask(tmp_path / "all.json", keep, loaded.model, model_id=loaded.model_id)
    keep[:, 1:] = False
    write_mask(tmp_path / "one.json", keep, loaded.model, model_id=loaded.model_id)
    same = json.loads(run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "--mask",
                                        str(tmp_path / "all.json"), "--json", "-q"])[1].out)
    assert same["loss"] == pytest.approx(dense["loss"], rel=1e-5) and same["mask"]["heads_kept"] == 8
    fewer = json.loads(run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "--mask",
                                         str(tmp_path / "one.json"), "--json", "-q"])[1].out)
    assert fewer["mask"]["heads_kept"] == 2 and fewer["loss"] != pytest.approx(dense["loss"], rel=1e-4)


@pytest.mark.parametrize("extra, match", [
    (["--model", "/no/such/model"], "no such model folder"),
    (["--model", "someone/some-model"], "not available offline"),
    (["--data", "/no/such/file.csv"], "no such file"),
    (["--label-column", "missing"], "has no column 'missing'"),
    (["--mask", "/no/such/mask.json"], "no such mask file"),
])
def test_bad_input_exits_2_with_one_line(workload, capsys, extra, match):
    folder, csv = workload
    argv = ["eval", "--model", str(folder), "--data", str(csv), "--json", "-q"]
    for i in range(0, len(extra), 2):
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i:i + 2]
    code, out = run_json(capsys, argv)
    assert code == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert lines[-1].startswith("headprune: error: ") and match in lines[-1]
    assert "Traceback" not in out.err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["eval"]) == 2  # --model is required
    assert main(["eval", "--model", "x", "--limit", "0"]) == 2
    assert main(["--help"]) == 0
    assert "eval" in COMMANDS


def test_causal_lm_eval_and_zero_shot_needs_labels(tmp_path, capsys):
    tok = word_tokenizer()
    folder = save(tiny_gpt2(tok), tok, tmp_path / "gpt2")
    csv = tmp_path / "t.csv"
    csv.write_text("text\nthe movie is good\nbad car\n")
    code, out = run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert {"perplexity", "next_token_accuracy", "loss", "n"} <= set(result)
    code, out = run_json(capsys, ["eval", "--model", str(folder), "--data", str(csv), "--zero-shot", "-q"])
    assert code == 2 and "named labels" in out.err


@pytest.mark.slow
def test_subprocess_exit_codes(workload):
    folder, csv = workload
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    ok = subprocess.run([sys.executable, "-m", "headprune.cli", "eval", "--model", str(folder), "--data", str(csv),
                         "--json", "-q"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n"] == 5
    bad = subprocess.run([sys.executable, "-m", "headprune.cli", "eval", "--model", str(folder / "nope")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].startswith("headprune: error: --model: no such model folder")
