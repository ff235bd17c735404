"""Attention weights and their statistics (headprune.scoring.attention): from a twin that never switches the
shared model, padding ignored, patterns over the real tokens."""

import numpy as np
import pytest
import torch
from helpers.scores import FAMILIES
from helpers.scores import patterns as _patterns
from helpers.scores import setup as _setup

from headprune.model import layout
from headprune.model.intervene import masked
from headprune.model.surgery import prune
from headprune.scoring.api import score_heads
from headprune.scoring.attention import (
    attention_pattern,
    attention_statistics,
    batch_attentions,
)
from headprune.scoring.registry import METRICS


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_mean_is_the_same_for_every_head(family):
    model, batches = _setup(family)
    assert (batches[0]["attention_mask"] == 0).any()  # padding present
    scores = score_heads(model, batches, "attention_mean", cache=False)
    expected = np.mean([1 / n for b in batches for n in b["attention_mask"].sum(-1).tolist()])
    torch.testing.assert_close(scores, torch.full_like(scores, expected), rtol=1e-5, atol=1e-6)
    assert METRICS["attention_mean"].teaching and "identical" in METRICS["attention_mean"].description


def test_attention_weights_come_from_a_twin_and_never_switch_the_shared_model():
    from headprune.model import intervene

    model, batches = _setup("bert")
    assert model.config._attn_implementation == "sdpa"
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 1] = False
    with masked(model, keep):  # the caller's mask reaches the twin: layer 1's attention changes
        masked_attentions = batch_attentions(model, batches[0])
    attentions = batch_attentions(model, batches[0])
    assert model.config._attn_implementation == "sdpa" and attentions[0].shape == (4, 4, 12, 12)
    torch.testing.assert_close(masked_attentions[0], attentions[0])
    assert not torch.allclose(masked_attentions[1], attentions[1])
    assert not intervene.attached(model)  # nothing left on the shared model
    twin = intervene._twin(model, "eager")
    assert twin.config._attn_implementation == "eager"
    assert all(a is b for a, b in zip(twin.parameters(), model.parameters()))  # the weights are shared, not copied


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_attention_pattern_covers_the_non_pad_tokens(family):
    model, batches = _setup(family)
    batch = batches[0]
    row = int(batch["attention_mask"].sum(-1).argmin())
    n = int(batch["attention_mask"][row].sum())
    weights, ids = attention_pattern(model, batch, row, 1, 2)
    assert weights.shape == (n, n) and ids.tolist() == batch["input_ids"][row, :n].tolist()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    if family == "llama":
        assert np.allclose(np.triu(weights, 1), 0)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[1, 2] = False
    pruned = prune(model, keep)
    with pytest.raises(ValueError, match="pruned away"):
        attention_pattern(pruned, batch, row, 1, 2)


def test_statistics_ignore_padding_and_causal_models_have_no_next_token():
    attn, mask = _patterns([8, 3])
    stats = attention_statistics(attn, mask, causal=False)
    torch.testing.assert_close(stats["mean_abs"], (1 / mask.sum(-1).float())[:, None].expand(2, 5))
    torch.testing.assert_close(stats["normalised_entropy"][:, 3], torch.ones(2))
    torch.testing.assert_close(stats["previous"][:, 0], torch.ones(2))
    causal = attention_statistics(torch.tril(attn[:, [0, 2, 4]]), mask, causal=True)
    assert torch.isnan(causal["next"]).all() and torch.isnan(causal["last"]).all()
    torch.testing.assert_close(causal["previous"][:, 0], torch.ones(2))
    torch.testing.assert_close(causal["first"][:, 1], torch.ones(2))  # the first query (trivially 1) is left out
    torch.testing.assert_close(causal["self"][:, 2], torch.ones(2))
