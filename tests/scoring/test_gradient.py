"""Gate-gradient scores (headprune.scoring.gradient): a central finite difference, and Fisher as the sum of
squared per-example gradients."""
import copy

import pytest
import torch
from helpers.scores import FAMILIES
from helpers.scores import loss as _loss
from helpers.scores import setup as _setup

from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.scoring.api import score_heads, score_many


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_matches_central_finite_difference(family):
    model = copy.deepcopy(tiny_model(family)).double()
    batch = {k: v[2:3] for k, v in tiny_batch(model).items()}  # one (padded) example: |.| cannot cancel
    grid = layout.head_grid(model)
    scores = score_heads(model, [batch], "gradient", cache=False)
    # Llama's RMSNorm computes in float32 even in a float64 model: a wider step, a float32 tolerance
    eps, rel = (3e-3, 2e-3) if family == "llama" else (1e-4, 1e-4)
    for layer, head in [(0, 0), (1, 2), (grid[0] - 1, grid[1] - 1)]:
        plus, minus = torch.ones(grid, dtype=torch.float64), torch.ones(grid, dtype=torch.float64)
        plus[layer, head] += eps
        minus[layer, head] -= eps
        estimate = (_loss(model, batch, plus) - _loss(model, batch, minus)) / (2 * eps)
        assert scores[layer, head].item() == pytest.approx(abs(estimate), rel=rel, abs=1e-4 * rel)


def test_fisher_is_the_sum_of_squared_per_example_gradients():
    model, batches = _setup("bert", n_batches=1)
    maps = score_many(model, batches, ["gradient", "fisher"], cache=False)
    singles = [score_heads(model, [{k: v[i:i + 1] for k, v in batches[0].items()}], "gradient", cache=False)
               for i in range(4)]
    torch.testing.assert_close(maps["fisher"], torch.stack(singles).square().sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps["gradient"], torch.stack(singles).mean(0), rtol=1e-4, atol=1e-6)
