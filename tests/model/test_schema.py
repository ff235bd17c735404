"""Mask files (headprune.model.schema): a JSON round trip, and every way a file can be wrong."""
from __future__ import annotations

import json

import pytest
import torch
from helpers.masks import random_keep as _random_keep

import headprune
from headprune.model.tiny import tiny_model


def test_mask_json_round_trip_and_errors(tmp_path):
    model = tiny_model("bert")
    keep = _random_keep(model)
    path = headprune.write_mask(tmp_path / "mask.json", keep, model, model_id="tiny-bert", meta={"metric": "gradient"})
    assert torch.equal(headprune.read_mask(path, model, model_id="tiny-bert"), keep)
    record = json.loads(path.read_text())
    assert record["meta"] == {"metric": "gradient"} and record["num_heads"] == 4
    with pytest.raises(ValueError, match="made for model 'tiny-bert'"):
        headprune.read_mask(path, model, model_id="other-model")
    with pytest.raises(ValueError, match=r"3 layers x 4 heads, this model has 3 x 6"):
        headprune.read_mask(path, tiny_model("llama"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        headprune.read_mask(tmp_path / "bad.json", model)
    with pytest.raises(ValueError, match="no such mask file"):
        headprune.read_mask(tmp_path / "missing.json", model)
    record["kept_heads"][0] = [9]
    (tmp_path / "range.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"whole numbers in \[0, 4\)"):
        headprune.read_mask(tmp_path / "range.json", model, check_model_id=False)
