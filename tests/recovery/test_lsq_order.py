"""The least-squares removal order (group OBS over the output projection's normal equations) on tiny models."""
from __future__ import annotations

import pytest
import torch

from headprune.model import layout
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lsq import lsq_recover, reconstruction_error
from headprune.recovery.lsq_order import reconstruction_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(family):
    model = tiny_model(family)
    return model, [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_the_first_head_to_go_in_a_layer_is_the_one_least_squares_best_makes_up_for(family):
    """Layer 0 sees the dense input whatever is removed there, so its refit error after removing one head is
    the quantity the order ranks: the lowest-scored head of layer 0 must give the smallest error."""
    model, batches = _setup(family)
    scores = reconstruction_scores(model, batches)
    assert scores.shape == layout.head_grid(model) and torch.isfinite(scores).all()
    errors = []
    for head in range(scores.shape[1]):
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[0, head] = False
        recovery = lsq_recover(model, keep, batches, method="weights", target="local")
        errors.append(float(reconstruction_error(model, recovery, batches)[0]))
    first = int(scores[0].argmin())
    assert errors[first] <= min(errors) * (1 + 1e-3) + 1e-9, (first, errors)
    torch.testing.assert_close(reconstruction_scores(model, batches), scores)  # deterministic


def test_the_merged_order_runs_through_every_layer_and_skips_heads_already_gone():
    model, batches = _setup("bert")
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[1] = False  # a whole layer gone
    keep[2, 0] = False
    pruned = prune(model, keep)
    scores = reconstruction_scores(pruned, batches)
    assert torch.isnan(scores[~keep]).all() and torch.isfinite(scores[keep]).all()
    assert (scores[keep] >= 0).all()
    full = reconstruction_scores(model, batches)
    assert len(set(full.flatten().tolist())) == full.numel()  # a total order over the heads
