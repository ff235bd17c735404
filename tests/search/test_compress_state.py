"""search.compress_state: the resumable state folder (commit order, model folders, refusals) and its JSON helpers."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from helpers.masks import token_logits

from headprune.core.errors import UserError
from headprune.core.outputs import CHECKPOINTS
from headprune.model.layout import kept_mask
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.search.compress_plan import CompressData, CompressSettings
from headprune.search.compress_state import (
    FORMAT_VERSION,
    STATE_FILE,
    StateStore,
    as_list,
    as_tensor,
    run_record,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_as_list_and_as_tensor_round_trip_nan_as_none():
    scores = torch.tensor([[0.5, math.nan], [-1.0, 2.0]])
    rows = as_list(scores)
    assert rows == [[0.5, None], [-1.0, 2.0]] and json.loads(json.dumps(rows, allow_nan=False)) == rows
    back = as_tensor(rows)
    assert back.dtype == torch.float32 and back.isnan().tolist() == [[False, True], [False, False]]
    torch.testing.assert_close(back, scores, equal_nan=True)
    keep = torch.tensor([[True, False], [False, True]])
    assert as_list(keep) == [[True, False], [False, True]] and torch.equal(as_tensor(as_list(keep), torch.bool), keep)


def test_state_round_trip_with_the_current_model(tmp_path):
    model = tiny_model("bert")
    store = StateStore(tmp_path / "state", {"settings": {"max_drop": 1.0}, "order": None})
    assert not store.exists()
    store.write({"steps": [], "keep": as_list(torch.ones(3, 4, dtype=torch.bool))})
    assert store.exists() and CHECKPOINTS.record(tmp_path / "state") is not None  # marked as headprune's own
    state, current = store.read()
    assert current is None and state["steps"] == [] and "model_dir" not in state
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1, :2] = False
    pruned = prune(model, keep)
    state = {"steps": [{"step": 1}, {"step": 2}], "keep": as_list(keep)}
    store.write(state, pruned)
    assert state["model_dir"] == "model-0002" and (tmp_path / "state" / "model-0002").is_dir()
    body = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert body["format_version"] == FORMAT_VERSION and body["record"] == store.record
    got, current = store.read()
    assert got == state and torch.equal(kept_mask(current), keep)
    batch = tiny_batch(model)
    torch.testing.assert_close(token_logits(current, batch), token_logits(pruned, batch))
    store.write({"steps": [{"step": i} for i in range(3)]}, pruned)  # the next step's model replaces the old one
    assert sorted(p.name for p in (tmp_path / "state").glob("model-*")) == ["model-0003"]
    store.clear()
    assert not store.exists() and not list((tmp_path / "state").glob("model-*"))


def test_another_runs_state_or_a_broken_file_is_refused(tmp_path):
    StateStore(tmp_path, {"settings": {"max_drop": 1.0}, "model": "abc", "order": None}).write({"steps": []})
    with pytest.raises(UserError, match=r"made by another run \(different model, settings\)"):
        StateStore(tmp_path, {"settings": {"max_drop": 2.0}, "model": "xyz", "order": None}).read()
    with pytest.raises(UserError, match=r"different train"):  # a key only one side has counts too
        StateStore(tmp_path, {"settings": {"max_drop": 1.0}, "model": "abc", "order": None, "train": "t"}).read()
    same = StateStore(tmp_path, {"settings": {"max_drop": 1.0}, "model": "abc", "order": None})
    (tmp_path / STATE_FILE).write_text('{"format_version": 99, "record": {}, "state": {}}')
    with pytest.raises(UserError, match="not a compress state this headprune writes"):
        same.read()
    (tmp_path / STATE_FILE).write_text('{"format_version": 1, ')
    with pytest.raises(UserError, match="cannot read the compress state .*start afresh without resuming"):
        same.read()


def test_run_record_changes_with_settings_model_data_and_order():
    model = tiny_model("bert", num_hidden_layers=1)
    batches = [tiny_batch(model, seed=s) for s in range(4)]
    data = CompressData(judge=batches[:1], calib=batches[1:2], train=batches[2:3], test=batches[3:])
    record = run_record(model, data, CompressSettings(), None)
    assert record == run_record(model, data, CompressSettings(), None)
    assert record["settings"] == dataclasses.asdict(CompressSettings()) and record["order"] is None
    assert len({record[k] for k in ("judge", "calib", "train", "test")}) == 4
    assert run_record(model, data, CompressSettings(max_drop=2.0), None)["settings"]["max_drop"] == 2.0
    swapped = CompressData(judge=data.test, calib=data.calib, train=data.train, test=data.judge)
    other = run_record(model, swapped, CompressSettings(), None)
    assert other["judge"] == record["test"] and other["test"] == record["judge"]
    assert run_record(tiny_model("bert", num_hidden_layers=1, seed=1), data, CompressSettings(), None)["model"] \
        != record["model"]
    order = torch.tensor([[2.0, math.nan, 1.0, 0.0]])
    assert run_record(model, data, CompressSettings(), order)["order"] == [[2.0, None, 1.0, 0.0]]
    json.dumps(run_record(model, data, CompressSettings(), order), allow_nan=False)
