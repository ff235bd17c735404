"""Ablation scores (headprune.scoring.ablation) equal masked minus dense evaluation, add up per example and
replay the ablated layer's attention."""

import numpy as np
import pytest
import torch
from helpers.scores import FAMILIES
from helpers.scores import setup as _setup

from headprune.evaluation.loop import evaluate
from headprune.model import layout
from headprune.scoring.api import contributions, score_heads


@pytest.mark.parametrize("family", FAMILIES + ["distilbert"])
def test_ablation_equals_masked_minus_dense_evaluation(family):
    model, batches = _setup(family)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[1, 0] = False  # score under a mask, as iterative pruning does
    scores = score_heads(model, batches, "ablation", keep=keep, cache=False)
    dense = evaluate(model, batches, keep)["loss"]
    for layer, head in np.ndindex(*keep.shape):
        if not keep[layer, head]:
            assert torch.isnan(scores[layer, head])
            continue
        without = keep.clone()
        without[layer, head] = False
        expected = evaluate(model, batches, without)["loss"] - dense
        assert abs(scores[layer, head].item() - expected) < 1e-5, (layer, head)


def test_ablation_per_example_contributions_add_up_to_the_score():
    model, batches = _setup("gpt2")
    parts = contributions(model, batches, "ablation")
    assert parts.values.shape[0] == 8
    torch.testing.assert_close(parts.aggregate().float(), score_heads(model, batches, "ablation", cache=False),
                               rtol=1e-4, atol=1e-6)


def test_ablation_replays_the_attention_of_the_ablated_layer_instead_of_recomputing_it():
    model, batches = _setup("bert")
    calls = []
    query = layout.blocks(model)[0].attention.self.query
    handle = query.register_forward_hook(lambda *args: calls.append(1))
    try:
        score_heads(model, batches, "ablation", cache=False)
    finally:
        handle.remove()
    assert len(calls) == len(batches)  # only the reference pass: layer-0 heads reuse its attention
