"""Pruning units (headprune.model.units): KV groups of a grouped-query model, whole or with equal counts."""
from __future__ import annotations

import pytest
import torch

import headprune
from headprune.model import layout
from headprune.model.tiny import tiny_model


def test_unit_modes():
    model = tiny_model("llama")
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, [0, 1]] = False  # group 0 keeps 1 of 3
    keep[1, [0, 3, 4]] = False  # group 0 keeps 2, group 1 keeps 1
    groups = headprune.kv_groups(model)
    assert groups == [0, 0, 0, 1, 1, 1]
    whole = headprune.to_units(keep, model, "kv-group")
    assert whole[0].tolist() == [False] * 3 + [True] * 3
    assert whole[1].tolist() == [True] * 3 + [False] * 3
    equal = headprune.to_units(keep, model, "group-equal")
    for layer in range(equal.shape[0]):
        counts = {int(c) for c in equal[layer].view(2, 3).sum(-1) if c > 0}
        assert len(counts) == 1
    with pytest.raises(ValueError, match="unknown unit mode"):
        headprune.to_units(keep, model, "blocks")
