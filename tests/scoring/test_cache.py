"""The score cache (headprune.scoring.cache): a hit is identical and skips the work; changed weights miss."""
import copy

import pytest
import torch
from helpers.scores import setup as _setup

from headprune.model import layout
from headprune.scoring.api import score_heads
from headprune.scoring.cache import model_fingerprint


def test_cache_hit_is_identical_and_skips_work_and_weight_changes_miss(monkeypatch):
    model, batches = _setup("bert")
    first = score_heads(model, batches, "ablation", keep=None)
    import headprune.scoring.api as score_module

    def fail(*args, **kwargs):
        raise AssertionError("recomputed despite a cache entry")

    monkeypatch.setattr(score_module, "ablation_statistic", fail)
    again = score_heads(model, batches, "ablation", normalise_layers=True)  # display options reuse the entry
    assert torch.equal(score_heads(model, batches, "ablation"), first)
    assert torch.isfinite(again).all()
    changed = copy.deepcopy(model)
    with torch.no_grad():
        layout.out_projections(changed)[1].weight[0, 0] += 1e-3
    assert model_fingerprint(changed) != model_fingerprint(model)
    with pytest.raises(AssertionError, match="recomputed"):
        score_heads(changed, batches, "ablation")
    with pytest.raises(AssertionError, match="recomputed"):
        score_heads(model, batches, "ablation", cache=False)
