"""score_heads / score_many (headprune.scoring.api) for every metric: shape, determinism, masked and pruned
heads, normalisation options, example limits and progress."""

import pytest
import torch
from helpers.scores import FAMILIES
from helpers.scores import setup as _setup

from headprune.model import layout
from headprune.model.surgery import prune
from headprune.scoring.agreement import rank_heads
from headprune.scoring.api import score_heads, score_many
from headprune.scoring.registry import METRICS


@pytest.mark.parametrize("family", FAMILIES)
def test_every_metric_has_the_right_shape_is_finite_and_deterministic(family):
    model, batches = _setup(family)
    first = score_many(model, batches, list(METRICS), cache=False)
    second = score_many(model, batches, list(METRICS), cache=False)
    for name in METRICS:
        assert first[name].shape == layout.head_grid(model) and first[name].dtype == torch.float32
        assert torch.isfinite(first[name]).all(), name
        assert torch.equal(first[name], second[name]), name
    other_seed = score_heads(model, batches, "random", seed=1, cache=False)
    assert not torch.equal(other_seed, first["random"])


def test_masked_and_pruned_heads_are_nan_and_pruning_keeps_the_other_scores():
    model, batches = _setup("bert")
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 1] = keep[2, 3] = False
    names = ["gradient", "norm", "entropy", "magnitude", "random"]
    masked_scores = score_many(model, batches, names, keep=keep, cache=False)
    pruned_scores = score_many(prune(model, keep), batches, names, cache=False)
    for name in names:
        assert torch.isnan(masked_scores[name][~keep]).all() and torch.isnan(pruned_scores[name][~keep]).all()
        torch.testing.assert_close(pruned_scores[name][keep], masked_scores[name][keep], rtol=1e-4, atol=1e-5)


def test_normalisation_options_do_what_they_say():
    model, batches = _setup("bert")
    plain = score_heads(model, batches, "gradient", cache=False)
    layered = score_heads(model, batches, "gradient", normalise_layers=True)
    torch.testing.assert_close(layered.norm(dim=-1), torch.ones(plain.shape[0]))
    torch.testing.assert_close(layered, plain / plain.norm(dim=-1, keepdim=True))
    both = score_heads(model, batches, "gradient", normalise_layers=True, global_minmax=True)
    assert both.min().item() == 0.0 and both.max().item() == pytest.approx(1.0)
    assert torch.equal(rank_heads(both), rank_heads(layered))
    raw = score_heads(model, batches, "entropy", raw=True)
    torch.testing.assert_close(raw, -score_heads(model, batches, "entropy"))
    with pytest.raises(ValueError, match="raw=True"):
        score_heads(model, batches, "entropy", raw=True, global_minmax=True)
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        score_heads(model, batches, "nope")
    with pytest.raises(ValueError, match="max examples"):
        score_heads(model, batches, "norm", max_examples=0)


def test_max_examples_and_progress():
    model, batches = _setup("bert")
    seen = []
    limited = score_heads(model, batches, "norm", max_examples=5, cache=False, progress=lambda f, m: seen.append(f))
    expected = score_heads(model, [batches[0], {k: v[:1] for k, v in batches[1].items()}], "norm", cache=False)
    torch.testing.assert_close(limited, expected)
    assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and seen == sorted(seen)
