"""Iterative rankings (headprune.search.iterative): rescoring rounds under the mask so far."""
from __future__ import annotations

import pytest
import torch

from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.scoring.api import score_heads
from headprune.search.iterative import iterative_scores
from headprune.search.masks import least_important


def test_iterative_scores_follow_rescoring_rounds():
    model = tiny_model("bert")  # 3 x 4 heads; step 0.25 removes 3 heads a round
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    seen = []
    ranks = iterative_scores(model, batches, "gradient", step=0.25, until=0.5, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and 0 <= seen[0] and seen[-1] == 1.0  # one bar over all rounds
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    for _ in range(2):  # the loop by hand: score under the mask, drop the 3 lowest
        keep = least_important(score_heads(model, batches, "gradient", keep=keep), 3, model=model, keep=keep)
        n = int((~keep).sum())
        assert torch.equal(least_important(ranks, n, model=model), keep)
    assert sorted(ranks.flatten().tolist()) == list(range(12))
    with pytest.raises(ValueError, match="step"):
        iterative_scores(model, batches, "gradient", step=0)
