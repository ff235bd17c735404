"""Physical pruning (headprune.model.surgery) on tiny random models of every family: the pruned model equals the
masked one and is smaller, pruning twice, no heads left, grouped-query KV heads, ViT."""
from __future__ import annotations

import pytest
import torch
from helpers.masks import FAMILY_TASKS
from helpers.masks import logits as _logits
from helpers.masks import random_keep as _random_keep
from helpers.masks import reference_ablation as _reference_ablation

import headprune
from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_prune_equals_masked_and_shrinks(family, task):
    model = tiny_model(family, task)
    batch = tiny_batch(model)
    keep = _random_keep(model, seed=1)
    keep[0] = False  # a layer that loses every head
    keep[1, 0] = True
    with headprune.masked(model, keep):
        expected = _logits(model, batch)
    before = layout.parameter_count(model)
    pruned = headprune.prune(model, keep)
    torch.testing.assert_close(_logits(pruned, batch), expected, atol=1e-4, rtol=1e-4)
    assert layout.parameter_count(pruned) < before
    assert layout.parameter_count(model) == before  # input model unchanged
    assert headprune.head_grid(pruned) == headprune.head_grid(model)
    assert torch.equal(headprune.kept_mask(pruned), keep)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_masking_a_pruned_model_and_pruning_twice(family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    first = _random_keep(model, seed=2, p=0.3)
    second = first & _random_keep(model, seed=3, p=0.3)
    pruned = headprune.prune(model, first)
    with headprune.masked(model, second):
        expected = _logits(model, batch)
    with headprune.masked(pruned, second):  # heads named by original index in the pruned model too
        torch.testing.assert_close(_logits(pruned, batch), expected, atol=1e-4, rtol=1e-4)
    twice = headprune.prune(pruned, second)
    torch.testing.assert_close(_logits(twice, batch), expected, atol=1e-4, rtol=1e-4)


def test_all_heads_removed_everywhere_still_runs():
    for family in ("bert", "gpt2", "llama"):
        model = tiny_model(family)
        batch = tiny_batch(model)
        keep = torch.zeros(layout.head_grid(model), dtype=torch.bool)
        with headprune.masked(model, keep):
            expected = _logits(model, batch)
        pruned = headprune.prune(model, keep)
        torch.testing.assert_close(_logits(pruned, batch), expected, atol=1e-4, rtol=1e-4)


def test_gqa_kv_heads_removed_only_with_whole_group():
    model = tiny_model("llama")  # 6 query heads, 2 KV groups of 3
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 0:3] = False  # whole group 0 of layer 0
    keep[1, 0] = False  # one head of group 0 in layer 1: group stays, counts 2 and 3 -> gcd 1 -> copies
    keep[2, [0, 3]] = False  # one head in each group: counts 2 and 2, no copies
    pruned = headprune.prune(model, keep)
    kv = layout.present_kv_heads(pruned)
    assert kv[0] == [1]
    assert kv[1] == [0, 0, 1, 1, 1]  # one stored KV slot per query head (n_rep 1)
    assert kv[2] == [0, 1]
    attn = [b.self_attn for b in layout.blocks(pruned)]
    assert [a.k_proj.out_features // layout.head_dim(model) for a in attn] == [1, 5, 2]
    assert [a.num_key_value_groups for a in attn] == [3, 1, 2]
    per_slot = 2 * layout.head_dim(model) * 4  # keys + values, fp32
    assert headprune.kv_cache_bytes_per_token(model) == 3 * 2 * per_slot
    assert headprune.kv_cache_bytes_per_token(pruned) == (1 + 5 + 2) * per_slot  # stored slots, copies included
    assert headprune.kv_cache_bytes_per_token(model, keep) == (1 + 2 + 2) * per_slot  # ideal, no copies
    equal = headprune.prune(model, headprune.to_units(keep, model, "group-equal"))
    assert headprune.kv_cache_bytes_per_token(equal) <= (1 + 2 + 2) * per_slot


def test_vit_mask_and_prune():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=16, patch_size=4, num_labels=3, initializer_range=0.3)
    model = ViTForImageClassification(config).eval()
    pixels = {"pixel_values": torch.randn(2, 3, 16, 16)}
    keep = torch.tensor([[True, False, True, False], [False] * 4])
    with headprune.masked(model, keep):
        expected = _logits(model, pixels)
    assert not torch.allclose(expected, _logits(model, pixels), atol=1e-3)
    torch.testing.assert_close(expected, _reference_ablation(model, keep, pixels), atol=1e-5, rtol=1e-5)
    pruned = headprune.prune(model, keep)
    torch.testing.assert_close(_logits(pruned, pixels), expected, atol=1e-4, rtol=1e-4)
    assert layout.parameter_count(pruned) < layout.parameter_count(model)
