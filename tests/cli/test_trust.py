"""Every bad input the issue lists, tried as a user would: exit 2 with one line before any work, nothing lost."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers.cli import run
from helpers.texts import REVIEWS

ROWS = REVIEWS[:5]


@pytest.fixture(scope="module")
def files(workload):
    """The CLI tests' tiny classifier, CSV and mask (conftest.py), beside a folder of the user's own files."""
    folder, csv, mask = workload
    root = folder.parent
    mine = root / "my-files"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    return {"model": folder, "csv": csv, "mask": mask, "mine": mine, "root": root}


def one_line_error(out, match: str) -> None:
    lines = out.err.strip().splitlines()
    assert lines and lines[-1].startswith("headprune: error: ") and match in lines[-1], out.err
    assert "Traceback" not in out.err and out.out == ""


def _mask_file(files, record_changes: dict) -> Path:
    record = json.loads(files["mask"].read_text())
    record.update(record_changes)
    path = files["root"] / f"bad-{len(list(files['root'].glob('bad-*')))}.json"
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("case, argv, match", [
    ("user folder as --out", ["prune", "--fraction", "0.5", "--out", "{mine}"], "headprune did not write"),
    ("user folder with --overwrite", ["prune", "--fraction", "0.5", "--out", "{mine}", "--overwrite"],
     "headprune did not write"),
    ("the source model folder", ["prune", "--fraction", "0.5", "--out", "{model}", "--overwrite"], "the input"),
    ("a folder holding the data", ["prune", "--fraction", "0.5", "--out", "{root}", "--overwrite"],
     "a folder holding the input"),
    ("the working directory", ["prune", "--fraction", "0.5", "--out", ".", "--overwrite"], "working directory"),
    ("finetune --out an existing file", ["finetune", "--mask", "{mask}", "--out", "{csv}"], "the input"),
    ("score --out a folder", ["score", "--out", "{mine}"], "a scores file is a file"),
    ("--mask-out a folder", ["prune", "--fraction", "0.5", "--out", "{root}/new", "--mask-out", "{mine}"],
     "a mask is a file"),
    ("--split bogus on one file", ["eval", "--split", "bogus"], "has no split 'bogus'"),
    ("--split test on one file", ["eval", "--split", "test"], "single file without a 'split' column"),
    ("--budget nan", ["prune", "--budget", "nan", "--out", "{root}/b"], "expected a finite number"),
    ("--min-heads-per-layer -2", ["prune", "--fraction", "0.5", "--min-heads-per-layer", "-2", "--out", "{root}/m"],
     "expected a number ≥ 0"),
    ("--min-heads-per-layer 5 --heads 2", ["prune", "--heads", "2", "--min-heads-per-layer", "5", "--out", "{root}/n"],
     "from 0 to 4"),
    ("--heads more than the guardrail allows", ["prune", "--heads", "7", "--out", "{root}/h"], "at most 6 can go"),
    ("--max-length past the positions", ["eval", "--max-length", "1000"], "this model reads (256 tokens)"),
    ("--fraction nan", ["prune", "--fraction", "nan", "--out", "{root}/f"], "expected a finite number"),
])
def test_bad_input_is_refused_before_any_work(files, capsys, case, argv, match):
    argv = [a.format(**files) for a in argv]
    if argv[0] != "bench":
        argv += ["--model", str(files["model"]), "--data", str(files["csv"]), "-q"]
    code, out = run(capsys, argv)
    assert code == 2, (case, out.err)
    one_line_error(out, match)
    assert (files["mine"] / "thesis.tex").read_text() == "precious"
    assert files["model"].is_dir() and files["csv"].is_file()


@pytest.mark.parametrize("change, match", [
    ({"num_layers": 2.7}, "'num_layers' must be a whole number"),
    ({"num_layers": True}, "'num_layers' must be a whole number"),
    ({"kept_heads": [[True, 1], [0, 1, 2, 3]]}, "kept heads must be whole numbers"),
    ({"kept_heads": [[0, 9], [0]]}, "whole numbers in [0, 4)"),
])
def test_malformed_masks_exit_2(files, capsys, change, match):
    code, out = run(capsys, ["eval", "--model", files["model"], "--data", files["csv"], "--mask",
                             _mask_file(files, change), "-q"])
    assert code == 2
    one_line_error(out, match)


def test_tampered_pruned_folders_say_what_is_wrong(files, capsys, tmp_path):
    folder = tmp_path / "pruned"
    code, out = run(capsys, ["prune", "--model", files["model"], "--data", files["csv"], "--mask", files["mask"],
                             "--out", folder, "-q"])
    assert code == 0, out.err
    record = json.loads((folder / "headprune_pruned.json").read_text())
    for change, match in (({"kept_heads": [[0, 1]]}, "'kept_heads' must list 2 layers"),
                          ({"kept_heads": [[1, 2, 3], [0, 1, 2]]}, "weights do not match"),
                          ({"num_heads": "four"}, "'num_heads' must be a whole number")):
        (folder / "headprune_pruned.json").write_text(json.dumps({**record, **change}))
        code, out = run(capsys, ["eval", "--model", folder, "--data", files["csv"], "-q"])
        assert code == 2, (change, out.err)
        one_line_error(out, match)
    (folder / "headprune_pruned.json").unlink()
    code, out = run(capsys, ["eval", "--model", folder, "--data", files["csv"], "-q"])
    assert code == 2
    one_line_error(out, "headprune_pruned.json is missing")


def test_replacing_a_previous_output_needs_overwrite_and_keeps_the_old_one_until_done(files, capsys, tmp_path):
    out_dir = tmp_path / "p"
    argv = ["prune", "--model", files["model"], "--data", files["csv"], "--fraction", "0.25", "--out", out_dir, "-q"]
    assert run(capsys, argv)[0] == 0
    first = (out_dir / "model.safetensors").read_bytes()
    code, out = run(capsys, argv)
    assert code == 2
    one_line_error(out, "is a headprune pruned model")
    assert (out_dir / "model.safetensors").read_bytes() == first
    again = ["prune", "--model", files["model"], "--data", files["csv"], "--fraction", "0.5", "--out", out_dir,
             "--overwrite", "-q"]
    code, out = run(capsys, again)
    assert code == 0, out.err
    assert json.loads((out_dir / "headprune_pruned.json").read_text())["heads_kept"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temp or old copies left


def test_finetune_on_one_file_says_it_evaluates_on_the_training_data(files, capsys, tmp_path):
    code, out = run(capsys, ["finetune", "--model", files["model"], "--data", files["csv"], "--mask", files["mask"],
                             "--out", tmp_path / "ft", "--max-steps", "1", "--json", "-q"])
    assert code == 0, out.err
    assert "not on held-out examples" in out.err
    assert json.loads(out.out)["evaluated_on"].startswith("training data")


def test_an_internal_failure_is_called_a_bug_with_the_traceback_in_a_log(files, capsys, monkeypatch, tmp_path):
    import dataclasses

    from headprune.cli import COMMANDS

    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))

    def broken(args):
        raise KeyError("an invariant")

    monkeypatch.setitem(COMMANDS, "eval", dataclasses.replace(COMMANDS["eval"], run=broken))
    code, out = run(capsys, ["eval", "--model", files["model"], "--data", files["csv"], "-q"])
    assert code == 1
    line = out.err.strip().splitlines()[-1]
    assert "internal error (this is a bug)" in line and "KeyError" in line
    log = Path(line.rsplit("the traceback is in ", 1)[1])
    assert log.is_file() and "Traceback" in log.read_text() and os.fspath(tmp_path) in os.fspath(log)
