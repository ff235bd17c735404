"""`headprune compress` end to end: the smallest model within budget with its report, shown on the curves, resumed."""
from __future__ import annotations

import json

import pytest
from helpers.cli import run

from headprune.evaluation.loop import evaluate
from headprune.model.layout import kept_mask
from headprune.model.storage import load_pruned
from headprune.presets import load_model
from headprune.sources.batches import make_batches
from headprune.sources.data import load_data

pytestmark = pytest.mark.usefixtures("one_thread")


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
