"""The smallest mask within a quality budget (headprune.search.budget), with and without recovery."""
from __future__ import annotations

import pytest
import torch
from helpers.masks import random_scores as _scores

from headprune.evaluation.loop import evaluate
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.search.budget import budget_mask


def test_budget_never_violates_what_it_checked():
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]
    scores = _scores(model)
    for max_drop in (0.0, 0.05, 0.2):
        keep, info = budget_mask(model, batches, scores, max_drop=max_drop, metric_key="accuracy")
        val = evaluate(model, batches, keep)["accuracy"]
        assert val >= info["dense"] - max_drop - 1e-9
        assert info["val"] == pytest.approx(val)
        assert info["heads_removed"] == int((~keep).sum()) and keep.any(-1).all()
        assert info["steps"] > 0
    keep, info = budget_mask(model, batches, scores, max_drop=0.05, greedy=True)
    assert evaluate(model, batches, keep)["accuracy"] >= info["dense"] - 0.05 - 1e-9


@pytest.mark.parametrize("method", ["scales", "weights"])
def test_budget_with_recovery_holds_for_the_recovered_model(method):
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]
    calib = [tiny_batch(model, seed=10 + s, batch_size=8) for s in range(2)]
    keep, info = budget_mask(model, batches, _scores(model), max_drop=0.1, recover_batches=calib,
                             recover_method=method)
    recovery = info["recovery"]
    assert info["heads_removed"] > 0 and recovery.method == method and torch.equal(recovery.keep, keep)
    with recovery.applied(model):
        val = evaluate(model, batches)["accuracy"]
    assert val >= info["dense"] - 0.1 - 1e-9 and info["val"] == pytest.approx(val)
