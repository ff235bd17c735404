"""Automatic masks from scores (headprune.search.masks): N least important, guardrails, GQA units, uniform masks."""
from __future__ import annotations

import pytest
import torch
from helpers.masks import random_scores as _scores

from headprune.core.errors import UserError
from headprune.model.tiny import tiny_model
from headprune.search.masks import least_important, uniform_least_important


def test_least_important_removes_lowest_with_guardrails():
    scores = torch.tensor([[0.1, 0.2, 0.9], [0.3, 0.05, 0.8]])
    keep = least_important(scores, 2, min_heads_per_layer=0)
    assert keep.tolist() == [[False, True, True], [True, False, True]]
    keep = least_important(scores, 4, min_heads_per_layer=1)
    assert keep.sum(-1).tolist() == [1, 1]
    assert least_important(scores, 100, min_heads_per_layer=0).sum() == 0
    with pytest.raises(ValueError, match="needs the model"):
        least_important(scores, 1, unit_mode="kv-group")


def test_least_important_gqa_units():
    model = tiny_model("llama")  # 6 query heads in 2 KV groups of 3
    scores = _scores(model)
    keep = least_important(scores, 4, model=model, unit_mode="kv-group")
    grouped = keep.view(keep.shape[0], 2, 3)
    assert torch.all(grouped.all(-1) | ~grouped.any(-1))  # whole groups only
    assert (~keep).sum() >= 4 and keep.any(-1).all()
    keep = least_important(scores, 5, model=model, unit_mode="group-equal")
    for row in keep.view(keep.shape[0], 2, 3):
        counts = {int(c) for c in row.sum(-1) if c > 0}
        assert len(counts) == 1


def test_uniform_masks_keep_the_most_important_whole_groups_in_every_layer():
    model = tiny_model("llama")  # 3 layers, 6 query heads in 2 KV groups of 3
    scores = torch.tensor([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 5, 5, 5], [2, 0, 0, 0, 1, 0]])
    keep = uniform_least_important(scores, 3, model=model)
    assert keep.int().tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert torch.equal(uniform_least_important(scores, 6, model=model), torch.ones(3, 6, dtype=torch.bool))
    only_second = torch.ones(3, 6, dtype=torch.bool)
    only_second[0, 0] = False  # layer 0's first group is no longer whole: its second group stays
    assert uniform_least_important(scores, 3, model=model, keep=only_second)[0].int().tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(UserError, match="not runtime-safe") as caught:
        uniform_least_important(scores, 4, model=model)
    assert caught.value.option == "heads_per_layer"
