"""Masks from scores (higher score = more important head): the removal order and "the N least important".

Guardrails: every layer keeps at least `min_heads_per_layer` heads; GQA unit modes (`headprune.model.units`)
remove whole KV groups or keep equal query heads per group.
"""
from __future__ import annotations

import torch

from ..core.errors import UserError
from ..core.types import UnitMode
from ..model.layout import head_grid, kv_group_size
from ..model.units import to_units, uniform_head_counts


def removal_order(scores: torch.Tensor) -> list[tuple[int, int]]:
    """Heads (layer, head) from least to most important; NaN (unscored / removed) last; ties by position."""
    flat = torch.as_tensor(scores, dtype=torch.float64).flatten()
    key = torch.where(torch.isnan(flat), torch.full_like(flat, float("inf")), flat)
    order = sorted(range(len(flat)), key=lambda i: (float(key[i]), i))
    heads = scores.shape[1]
    return [(i // heads, i % heads) for i in order]


def check_min_heads(min_heads_per_layer, heads_per_layer: int) -> None:
    """`min_heads_per_layer` must be a whole number in [0, heads per layer]."""
    if isinstance(min_heads_per_layer, bool) or not isinstance(min_heads_per_layer, int) \
            or not 0 <= min_heads_per_layer <= heads_per_layer:
        raise UserError(f"heads kept per layer must be a whole number from 0 to {heads_per_layer} (the heads a layer "
                        f"has), got {min_heads_per_layer!r}", option="min_heads_per_layer")


def removable_heads(grid: tuple[int, int], min_heads_per_layer: int) -> int:
    """How many heads `least_important` can remove at most with this guardrail."""
    check_min_heads(min_heads_per_layer, grid[1])
    return grid[0] * (grid[1] - min_heads_per_layer)


def least_important(scores: torch.Tensor, n: int, *, model=None, min_heads_per_layer: int = 1,
                    unit_mode: UnitMode = "head", keep=None) -> torch.Tensor:
    """Keep mask (L, H) with the `n` least important heads removed (on top of `keep`, default all kept).

    Guardrails: every layer keeps at least `min_heads_per_layer` heads (heads skipped by this rule are passed
    over for the next in order). `unit_mode` ("head", "group-equal", "kv-group"; needs `model`) follows
    `headprune.model.units.to_units`: "kv-group" removes whole KV groups by their mean score until at least n
    heads are gone, "group-equal" evens out the kept heads per group afterwards, so the count can differ by
    a few heads.
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.dim() != 2:
        raise UserError(f"scores must be (num_layers, num_heads), got shape {tuple(scores.shape)}")
    layers, heads = scores.shape
    if model is not None and head_grid(model) != (layers, heads):
        raise UserError(f"scores are {layers}x{heads} but the model has {head_grid(model)} heads")
    if unit_mode != "head" and model is None:
        raise UserError(f"unit mode {unit_mode!r} needs the model (to know its KV groups)")
    check_min_heads(min_heads_per_layer, heads)
    keep = torch.ones(layers, heads, dtype=torch.bool) if keep is None else torch.as_tensor(keep).bool().clone()
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"the number of heads to remove must be a whole number >= 0, got {n!r}", option="heads")
    if unit_mode == "kv-group" and kv_group_size(model) > 1:
        return _remove_groups(scores, n, model, min_heads_per_layer, keep)
    removed = 0
    for layer, head in removal_order(scores.masked_fill(~keep, float("nan"))):
        if removed >= n or not keep[layer, head]:
            break
        if int(keep[layer].sum()) <= min_heads_per_layer:
            continue
        keep[layer, head] = False
        removed += 1
    if unit_mode != "head":
        keep = to_units(keep, model, unit_mode, scores)
    return keep


def _remove_groups(scores, n, model, min_heads_per_layer, keep):
    """`least_important` in "kv-group" mode: whole groups by their mean score until n heads are gone."""
    size = kv_group_size(model)
    layers, heads = scores.shape
    group_scores = scores.view(layers, heads // size, size).nanmean(-1)  # (L, G)
    grouped = keep.view(layers, heads // size, size)
    min_groups = -(-min_heads_per_layer // size)
    removed = 0
    for layer, group in removal_order(group_scores.masked_fill(~grouped.any(-1), float("nan"))):
        if removed >= n or not grouped[layer, group].any():
            break
        if int(grouped[layer].any(-1).sum()) <= min_groups:
            continue
        removed += int(grouped[layer, group].sum())
        grouped[layer, group] = False
    return grouped.reshape(layers, heads).clone()


def uniform_least_important(scores: torch.Tensor, heads_per_layer: int, *, model, keep=None) -> torch.Tensor:
    """Keep mask (L, H) with `heads_per_layer` query heads in every layer, in whole KV groups (runtime-safe, see
    `headprune.deploy.shapes`): per layer the most important groups by summed score (ties: lower index) among
    those `keep` (default all) still keeps whole. `heads_per_layer` must be one of `uniform_head_counts(model)`."""
    counts = uniform_head_counts(model)
    if heads_per_layer not in counts:
        raise UserError(f"{heads_per_layer} heads per layer is not runtime-safe for this model; choose one of "
                        f"{', '.join(map(str, counts))}", option="heads_per_layer")
    layers, heads = head_grid(model)
    size = kv_group_size(model)
    keep = torch.ones(layers, heads, dtype=torch.bool) if keep is None else torch.as_tensor(keep).bool()
    scores = torch.nan_to_num(torch.as_tensor(scores, dtype=torch.float32), nan=0.0)
    group_scores = scores.view(layers, heads // size, size).sum(-1)  # (L, G)
    whole = keep.view(layers, heads // size, size).all(-1)  # (L, G)
    out = torch.zeros(layers, heads // size, dtype=torch.bool)
    for layer in range(layers):
        ranked = sorted(whole[layer].nonzero().flatten().tolist(), key=lambda g: (-float(group_scores[layer, g]), g))
        if len(ranked) * size < heads_per_layer:
            raise UserError(f"layer {layer} keeps only {len(ranked) * size} heads in whole groups, fewer than "
                            f"{heads_per_layer}", option="heads_per_layer")
        out[layer, ranked[: heads_per_layer // size]] = True
    return out[:, :, None].expand(layers, heads // size, size).reshape(layers, heads).clone()
