"""`headprune export-onnx` end to end on a tiny classifier saved to disk, checked in ONNX Runtime."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.cli import run
from helpers.texts import REVIEWS as ROWS
from helpers.tiny import bert_tokenizer, save, tiny_bert

from headprune.deploy import read_sidecar, session
from headprune.model.intervene import masked
from headprune.model.schema import write_mask
from headprune.presets import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """A tiny BERT (2 layers x 4 heads) folder, a 30-row CSV, and a mask keeping heads [3] and [0, 1, 2]."""
    root = tmp_path_factory.mktemp("deploy-cli")
    tok = bert_tokenizer(root / "tok")
    model = tiny_bert(tok, label_names=["negative", "neutral", "positive"])
    folder = save(model, tok, root / "model")
    csv = root / "reviews.csv"
    csv.write_text("review,sentiment\n" + "\n".join(ROWS * 3) + "\n")
    keep = torch.tensor([[False, False, False, True], [True, True, True, False]])
    write_mask(root / "mask.json", keep, model, model_id=str(folder))
    return folder, csv, root / "mask.json", keep


@pytest.mark.slow
def test_export_onnx_writes_a_checked_file_and_times_it(workload, capsys, tmp_path):
    folder, csv, mask, keep = workload
    out = tmp_path / "model.onnx"
    code, printed = run(capsys, ["export-onnx", "--model", str(folder), "--data", str(csv), "--mask", str(mask),
                                 "--out", str(out), "--batch-size", "4", "--seq-len", "16", "--repeats", "2",
                                 "--threads", "1", "--json", "-q"])
    assert code == 0, printed.err
    result = json.loads(printed.out)
    assert result["command"] == "export-onnx" and result["kept_heads"] == [[3], [0, 1, 2]]
    assert result["parity"]["ok"] and result["parity"]["agreement"] == 1.0 and result["parity"]["examples"] == 30
    assert result["meta"]["parity_examples"] == f"the first 30 of 30 examples of {csv}"
    timed = result["latency"]
    assert timed["settings"] == {"batch_size": 4, "seq_len": 16, "repeats": 2, "warmup": 3, "threads": 1}
    assert timed["flop_ratio"] == pytest.approx(result["flop_ratio"], rel=0.05) and timed["flop_ratio"] < 1
    assert timed["dense"]["latency_ms_median"] > 0 and "time_ratio" in timed
    assert "no KV cache" in result["note"]
    assert read_sidecar(out)["kept_heads"] == [[3], [0, 1, 2]]
    model = load_model(str(folder)).model  # the graph equals the masked model on new inputs
    ids = torch.randint(5, 40, (3, 7))
    feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    got = session(out).run(None, {k: v.numpy() for k, v in feed.items()})[0]
    with torch.no_grad(), masked(model, keep):
        torch.testing.assert_close(torch.from_numpy(got), model(**feed).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_export_onnx_readable_summary_recovery_and_overwrite(workload, capsys, tmp_path):
    folder, csv, mask, _ = workload
    out = tmp_path / "model.onnx"
    base = ["export-onnx", "--model", str(folder), "--data", str(csv), "--mask", str(mask), "--out", str(out),
            "--no-latency", "-q"]
    code, printed = run(capsys, base)
    assert code == 0, printed.err
    for line in ("heads kept    4 of 8 (per layer: 1, 3)", "parity        ok: max |Δ logit|", "FLOP ratio",
                 "note          no KV cache"):
        assert line in printed.out, printed.out
    assert "ONNX Runtime  dense" not in printed.out  # --no-latency
    code, printed = run(capsys, base + ["--recover", "scales"])
    assert code == 2 and "already exists and is a headprune ONNX export" in printed.err
    code, printed = run(capsys, base + ["--recover", "scales", "--overwrite"])
    assert code == 0, printed.err
    assert "recovered     least squares (scales" in printed.out and "parity        ok" in printed.out
    assert read_sidecar(out)["recovery"]["method"] == "scales"
    code, printed = run(capsys, base + ["--recover", "--recover-ffn", "--overwrite"])
    assert code == 0, printed.err
    assert "feed-forward outputs too" in printed.out and "parity        ok" in printed.out
    assert read_sidecar(out)["recovery"] == {"method": "weights", "target": "dense", "feed_forward": True}


@pytest.mark.parametrize("extra, message", [
    (["--recover"], "--recover refits the heads a mask keeps; add --mask"),
    (["--calib-split", "train", "--mask", "MASK"], "--calib-split is the data --recover calibrates on"),
    (["--recover-ffn", "--mask", "MASK"], "--recover-ffn extends --recover weights"),
    (["--mask", "MASK", "--seq-len", "5000"], "--seq-len: seq_len 5000 exceeds the model's 256 positions"),
])
def test_export_onnx_refuses_bad_options_before_exporting(workload, capsys, tmp_path, extra, message):
    folder, csv, mask, _ = workload
    extra = [str(mask) if e == "MASK" else e for e in extra]
    code, printed = run(capsys, ["export-onnx", "--model", str(folder), "--data", str(csv),
                                 "--out", str(tmp_path / "m.onnx"), "-q", *extra])
    assert code == 2 and message in printed.err, printed.err
    assert not list(tmp_path.iterdir())


def test_export_onnx_checks_the_output_before_loading_anything(workload, capsys, tmp_path):
    folder, _, mask, _ = workload
    (tmp_path / "notes.onnx").write_text("mine")
    code, printed = run(capsys, ["export-onnx", "--model", str(tmp_path / "no-such-model"), "--out",
                                 str(tmp_path / "notes.onnx")])
    assert code == 2 and "headprune: error: --out:" in printed.err and "already exists" in printed.err
    code, printed = run(capsys, ["export-onnx", "--model", str(folder), "--mask", str(mask), "--out", str(mask)])
    assert code == 2 and "never replaces" in printed.err
    assert Path(tmp_path / "notes.onnx").read_text() == "mine"
