"""The layer-prefix cache re-runs only layers >= l and gives exactly the full forward's logits."""
from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

import headprune
from headprune.evaluation.prefix import PrefixCache
from headprune.model import layout
from headprune.model.forward import forward_logits
from headprune.model.tiny import tiny_batch, tiny_model


def _full(model, batch, keep):
    with torch.no_grad(), headprune.masked(model, keep):
        return forward_logits(model, batch)


@pytest.mark.parametrize("contexts", [False, True])
@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_logits_from_every_start_layer_equal_full_forward(family, contexts):
    model = tiny_model(family)
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    cache = PrefixCache(model, batches, contexts=contexts)
    assert cache.enabled and cache.nbytes > 0 and cache.contexts_enabled == contexts
    for layer in range(layout.num_layers(model)):
        for head in range(layout.num_heads(model)):
            keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
            keep[layer, head] = False
            for index, batch in enumerate(batches):
                torch.testing.assert_close(cache.logits_for(index, keep, layer), _full(model, batch, keep), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("contexts", [False, True])
def test_advance_follows_a_sequence_of_masks_and_skips_lower_layers(contexts):
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    cache = PrefixCache(model, batches, contexts=contexts)
    gen = torch.Generator().manual_seed(0)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    for _ in range(6):
        layer, head = int(torch.randint(0, 3, (1,), generator=gen)), int(torch.randint(0, 4, (1,), generator=gen))
        keep[layer, head] = ~keep[layer, head]
        assert cache.lowest_changed_layer(keep) == layer
        logits = cache.advance(keep)
        for index, batch in enumerate(batches):
            torch.testing.assert_close(logits[index], _full(model, batch, keep), atol=1e-5, rtol=1e-5)
    assert cache.lowest_changed_layer(keep) is None

    calls = []
    handle = layout.out_projections(model)[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        keep[2, 0] = ~keep[2, 0]
        cache.advance(keep)
    finally:
        handle.remove()
    assert calls == [], "a change in layer 2 must not run layer 0"


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_contexts_replay_the_attention_core_and_survive_heads_coming_back(family):
    model = tiny_model(family)
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    cache = PrefixCache(model, batches, contexts=True)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    calls = []
    out_projection = layout.out_projections(model)[1]
    core = [m for m in layout.attention_modules(model)[1].modules() if isinstance(m, (torch.nn.Linear, Conv1D))
            and m is not out_projection]  # query/key/value projections of layer 1
    assert core
    for layer, head, value in ((1, 0, False), (1, 1, False), (1, 0, True), (2, 0, False), (1, 1, True)):
        keep[layer, head] = value
        handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in core]
        try:
            logits = cache.advance(keep)
        finally:
            for handle in handles:
                handle.remove()
        for index, batch in enumerate(batches):
            torch.testing.assert_close(logits[index], _full(model, batch, keep), atol=1e-5, rtol=1e-5)
    assert calls == [], "layer 1's attention core must be replayed, not recomputed"
    assert cache.nbytes > sum(t.numel() * t.element_size() for per in cache.inputs for t in per)


def test_contexts_are_dropped_first_when_memory_is_short():
    model = tiny_model("bert")
    batches = [tiny_batch(model)]
    full = PrefixCache(model, batches, contexts=True)
    tight = PrefixCache(model, batches, contexts=True, max_bytes=full.estimated_bytes // 2)
    assert tight.enabled and not tight.contexts_enabled
    assert all(c is None for per in tight.contexts for c in per)


def test_disabled_cache_falls_back_to_full_passes():
    model = tiny_model("gpt2")
    batches = [tiny_batch(model)]
    cache = PrefixCache(model, batches, max_bytes=1)
    assert not cache.enabled and cache.nbytes == 0
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[1, 2] = False
    torch.testing.assert_close(cache.advance(keep)[0], _full(model, batches[0], keep))
