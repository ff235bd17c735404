"""core.types: each closed vocabulary's runtime tuple matches its Literal and is what the engine accepts."""
from __future__ import annotations

import typing

import pytest
import torch
import torch.nn.functional as F

from headprune.core import types
from headprune.core.errors import UserError


def test_runtime_tuples_match_their_literals():
    pairs = {"TASKS": "Task", "UNIT_MODES": "UnitMode", "CURVE_MODES": "CurveMode", "RECOVERY_METHODS":
             "RecoveryMethod", "RECOVERY_TARGETS": "RecoveryTarget", "LATENCY_RUNTIMES": "LatencyRuntime",
             "COMPRESS_UNITS": "CompressUnit"}
    for tuple_name, literal_name in pairs.items():
        values = getattr(types, tuple_name)
        assert isinstance(values, tuple) and values == typing.get_args(getattr(types, literal_name))
        assert len(set(values)) == len(values) and all(isinstance(v, str) and v == v.strip() for v in values)
    assert types.TASKS == ("classification", "causal-lm", "masked-lm")


def test_every_task_builds_a_model_that_reads_as_that_task():
    from headprune.model.layout import task_of
    from headprune.model.tiny import tiny_model

    for task in types.TASKS:
        assert task_of(tiny_model("bert", task, num_hidden_layers=1)) == task
    with pytest.raises(UserError, match="choose one of classification, causal-lm, masked-lm"):
        tiny_model("bert", "regression")


def test_every_unit_mode_is_accepted_and_others_are_named():
    from headprune.model.tiny import tiny_model
    from headprune.model.units import to_units

    model = tiny_model("llama")
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[0, 0] = False
    for mode in types.UNIT_MODES:
        assert to_units(keep, model, mode).shape == (3, 6)
    with pytest.raises(UserError, match="choose one of head, group-equal, kv-group"):
        to_units(keep, model, "layer")


def test_ignore_index_is_what_torch_losses_skip():
    logits = torch.randn(4, 5)
    labels = torch.tensor([1, types.IGNORE_INDEX, 3, types.IGNORE_INDEX])
    assert F.cross_entropy(logits, labels) == pytest.approx(F.cross_entropy(logits[[0, 2]], labels[[0, 2]]).item())
