"""ONNX export (headprune.deploy.export): every encoder and decoder family and task (uneven heads, empty
layers, GPT-2's Conv1D, grouped-query attention with KV copies, whole KV groups) checked in ONNX Runtime
against the masked dense model, a least-squares recovered export, the sidecar, and atomic writing."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from helpers.masks import keep_rows as _mask
from helpers.masks import token_logits as _logits
from helpers.onnx_parity import check_export

import headprune
from headprune.core.errors import OutputExistsError, UserError
from headprune.deploy import export as export_module
from headprune.deploy import (
    export_onnx,
    read_sidecar,
    session,
)
from headprune.deploy.runtime import feed
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lsq import Recovery, lsq_recover


@pytest.mark.parametrize("family,task,rows", [
    ("bert", "masked-lm", [[], [1, 2, 3]]),
    ("roberta", "classification", [[0, 1, 2, 3], [2]]),
    ("electra", "classification", [[1, 2], []]),
    ("distilbert", "masked-lm", [[3], [0, 1]]),
])
def test_encoder_export_matches_masked_model(tmp_path, family, task, rows):
    check_export(tmp_path, family, task, rows)


@pytest.mark.parametrize("family,task,rows", [
    ("gpt2", "causal-lm", [[], [1, 2, 3]]),
    ("llama", "causal-lm", [[0, 1, 3], [3, 4, 5]]),  # groups of 3: 2 + 1 heads -> KV copies
    ("mistral", "classification", [[], [0, 1, 5]]),  # groups of 2; an empty layer
])
def test_decoder_export_matches_masked_model(tmp_path, family, task, rows):
    check_export(tmp_path, family, task, rows)


@pytest.mark.slow
def test_recovered_export_matches_recovered_model(tmp_path):
    def recover(model, keep):
        return lsq_recover(model, keep, [tiny_batch(model, seed=s) for s in range(4)], method="weights")

    result = check_export(tmp_path, "qwen2", "causal-lm", [[3, 4, 5], [0, 1, 2]], recovery=recover)  # whole groups
    assert result.recovery == {"method": "weights", "target": "local", "feed_forward": False}


def test_export_writes_file_and_sidecar(exported):
    model, keep, result = exported
    assert result.parity.ok and result.parity.max_abs_diff < 1e-4 and result.parity.agreement == 1.0
    assert result.parity.source == "given batches" and result.parity.examples == 8
    record = read_sidecar(result.path)
    assert record == json.loads(json.dumps(result.to_dict()))
    assert record["kept_heads"] == [[], [0, 3], [1, 2, 3]] and record["model_id"] == "tiny-bert"
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["versions"]["exporter"] == "torch.onnx.export(dynamo=True)" and record["opset"] >= 18
    assert record["meta"] == {"note": "test"} and record["heads_kept"] == 5
    proto = onnx.load(result.path, load_external_data=False)
    identity = json.loads({p.key: p.value for p in proto.metadata_props}["headprune"])
    assert identity["kept_heads"] == [[], [0, 3], [1, 2, 3]]
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert sorted(p.name for p in Path(result.path).parent.iterdir()) == ["bert.onnx", "bert.onnx.headprune.json"]
    with headprune.masked(model, keep):  # the graph equals the masked dense model, at other shapes too
        for b, t in [(1, 1), (3, 5), (2, 30)]:
            batch = tiny_batch(model, batch_size=b, seq_len=t, seed=7)
            got = session(result.path).run(None, {k: v.numpy() for k, v in feed(batch, record["inputs"]).items()})[0]
            torch.testing.assert_close(torch.from_numpy(got), _logits(model, batch), atol=1e-4, rtol=1e-4)


def test_export_refuses_existing_file_and_interrupted_export_leaves_it(exported, monkeypatch):
    model, keep, result = exported
    before = Path(result.path).read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        export_onnx(model, result.path, keep)
    with pytest.raises(UserError, match="is a folder"):
        export_onnx(model, Path(result.path).parent, keep)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module.runtime, "check_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, result.path, keep, overwrite=True)
    assert Path(result.path).read_bytes() == before
    folder = Path(result.path).parent
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary files left"
    with pytest.raises(UserError, match="not an ONNX file exported by headprune"):
        read_sidecar(folder / "other.onnx")


def test_export_refuses_a_recovery_for_another_mask(tmp_path):
    model = tiny_model("bert")
    recovery = Recovery.of_mask(model, _mask(model, [[0]] * 3))
    with pytest.raises(UserError, match="recovery was made for another mask"):
        export_onnx(model, tmp_path / "m.onnx", _mask(model, [[1]] * 3), recovery=recovery)
    assert not list(tmp_path.iterdir())
