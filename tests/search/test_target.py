"""Masks for a FLOPs or latency target (headprune.search.target)."""
from __future__ import annotations

import pytest
from helpers.masks import random_scores as _scores

from headprune.evaluation.cost import flops_per_token
from headprune.model.tiny import tiny_model
from headprune.search.target import target_mask


def test_target_mask_reaches_flops_ratio():
    model = tiny_model("gpt2")
    keep, info = target_mask(model, _scores(model), flops_ratio=0.8, seq_len=16)
    ratio = flops_per_token(model, keep, 16) / flops_per_token(model, None, 16)
    assert ratio <= 0.8 and info["flops_ratio"] == pytest.approx(ratio)
    with pytest.raises(ValueError, match="larger ratio"):
        target_mask(model, _scores(model), flops_ratio=0.01, seq_len=16)
    with pytest.raises(ValueError, match="exactly one"):
        target_mask(model, _scores(model))


def test_target_mask_by_latency_is_generous_for_a_loose_target():
    model = tiny_model("bert")
    keep, info = target_mask(model, _scores(model), latency_ms=1e6, seq_len=8, batch_size=1, repeats=1)
    assert info["heads_removed"] == 0 and keep.all()
