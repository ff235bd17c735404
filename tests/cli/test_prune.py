"""`headprune prune` end to end: by fraction, mask or budget, iterative, recovered."""
from __future__ import annotations

import json

import pytest
from helpers.cli import run

from headprune.evaluation.loop import evaluate
from headprune.model.layout import kept_mask
from headprune.model.schema import read_mask
from headprune.model.storage import load_pruned
from headprune.presets import load_model
from headprune.recovery.lsq import lsq_recover
from headprune.sources.batches import make_batches
from headprune.sources.data import load_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_prune_by_fraction_and_by_mask(workload, capsys, tmp_path):
    folder, csv, mask = workload
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--fraction", "0.5",
                             "--out", str(tmp_path / "half"), "--mask-out", str(tmp_path / "half.json"), "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["heads_kept"] == 4 and result["parameters_after"] < result["parameters_before"]
    assert int(kept_mask(load_pruned(tmp_path / "half")).sum()) == 4
    assert load_model(str(tmp_path / "half")).tokenizer("good movie").input_ids == \
        load_model(str(folder)).tokenizer("good movie").input_ids  # the tokenizer was saved with the model
    code, out = run(capsys, ["prune", "--model", str(folder), "--mask", str(mask), "--out", str(tmp_path / "m"), "-q"])
    assert code == 0 and "heads kept  5 of 8" in out.out
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--budget", "100",
                             "--out", str(tmp_path / "b"), "--json", "-q"])
    assert code == 0, out.err
    assert json.loads(out.out)["heads_kept"] == 2  # a budget of 100 points allows everything but 1 head per layer


@pytest.mark.parametrize("method, ffn", [("weights", False), ("scales", False), ("weights", True)])
def test_prune_iterative_recovered_budget_saves_the_recovered_model(workload, split_csv, capsys, tmp_path, method, ffn):
    folder, _, _ = workload
    csv = split_csv
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--budget", "100", "--iterative",
                             "0.25", "--recover", method, "--calib-split", "train", "--out", str(tmp_path / "r"),
                             "--mask-out", str(tmp_path / "r.json"), "--json", "-q", *(["--recover-ffn"] if ffn else [])])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["heads_kept"] == 2 and result["recovered"] == method and result["iterative_step"] == 0.25
    assert result["recover_feed_forward"] is ffn
    assert result["calib_split"] == "train" and result["recover_target"] == "dense"  # a BERT model: post-norm
    loaded = load_model(str(folder))
    keep = read_mask(tmp_path / "r.json", loaded.model)
    df = load_data(str(csv), split="validation", label2id=loaded.label2id)
    batches = make_batches(loaded.tokenizer, df, "classification", batch_size=32, max_length=128)
    calib = make_batches(loaded.tokenizer, load_data(str(csv), split="train", label2id=loaded.label2id),
                         "classification", batch_size=32, max_length=128)
    with lsq_recover(loaded.model, keep, calib, method=method, feed_forward=ffn).applied(loaded.model):
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
    code, out = run(capsys, ["prune", "--model", str(folder), "--data", str(csv), "--fraction", "0.5",
                             "--recover-ffn", "--out", str(tmp_path / "x")])
    assert code == 2 and "--recover-ffn" in out.err and not (tmp_path / "x").exists()
