"""Pruning units for grouped-query attention, and the KV-cache size they imply.

With GQA, query heads share key/value heads (groups). Three ways to choose what to remove:
* "head": any query head (a KV head goes only when its whole group goes);
* "group-equal": every kept group of a layer keeps the same number of query heads (no KV copies when
  physically pruned, see `prune`);
* "kv-group": whole groups only, the only mode that shrinks the KV cache for every removed head.
`uniform_head_counts`: the query heads per layer a runtime-safe (same in every layer, whole groups) mask may keep.
"""
from __future__ import annotations

import torch

from ..core.errors import UserError
from ..core.types import UNIT_MODES, UnitMode
from .adapters import adapter_for
from .layout import (
    head_dim,
    head_grid,
    kept_mask,
    kv_group_of,
    kv_group_size,
    present_kv_heads,
    to_keep_tensor,
)
from .surgery import config_rejects_counts


def kv_groups(model) -> list[int]:
    """The original KV head (group) of every query head; `list(range(H))` without GQA."""
    return kv_group_of(model)


def to_units(keep, model, mode: UnitMode = "head", scores: torch.Tensor | None = None) -> torch.Tensor:
    """Convert a keep mask (L, H) so that it respects a unit mode; returns a new bool tensor.

    "kv-group": a group stays whole if at least half its query heads were kept, else goes whole.
    "group-equal": per layer, each kept group keeps k = round(kept heads / kept groups) query heads, the
    ones the mask kept first, then by `scores` (higher = more important, default head order).
    """
    if mode not in UNIT_MODES:
        raise UserError(f"unknown unit mode {mode!r}; choose one of {', '.join(UNIT_MODES)}")
    keep = to_keep_tensor(keep, model).clone()
    size = kv_group_size(model)
    if mode == "head" or size == 1:
        return keep
    layers, heads = keep.shape
    grouped = keep.view(layers, heads // size, size)  # (L, G, group size)
    if mode == "kv-group":
        whole = grouped.sum(-1, keepdim=True) * 2 >= size
        return whole.expand_as(grouped).reshape(layers, heads).clone()
    scores = torch.zeros(layers, heads) if scores is None else torch.as_tensor(scores, dtype=torch.float32)
    order_key = keep.float() * 1e9 + scores - torch.arange(heads) * 1e-6  # kept first, then score, then index
    out = torch.zeros_like(keep)
    for layer in range(layers):
        kept_groups = grouped[layer].any(-1).nonzero().flatten()
        if len(kept_groups) == 0:
            continue
        k = max(1, round(int(keep[layer].sum()) / len(kept_groups)))
        for g in kept_groups.tolist():
            members = torch.arange(g * size, (g + 1) * size)
            best = members[order_key[layer, members].argsort(descending=True)[:k]]
            out[layer, best] = True
    return out


def kv_cache_bytes_per_token(model, keep=None, *, bytes_per_value: int | None = None) -> int:
    """Bytes of KV cache one token costs (keys + values, all layers).

    Without `keep`: what the model as stored holds (a physically pruned model's actual KV slots, copies
    included). With `keep`: the ideal after pruning by that mask, counting each KV head with any kept query
    head once. `bytes_per_value` defaults to the model's parameter dtype size.
    """
    if bytes_per_value is None:
        bytes_per_value = next(model.parameters()).element_size()
    dh = head_dim(model)
    if keep is None:
        slots = sum(len(layer) for layer in present_kv_heads(model))
    else:
        keep = to_keep_tensor(keep, model)
        size = kv_group_size(model)
        slots = int(keep.view(keep.shape[0], -1, size).any(-1).sum())
    return 2 * slots * dh * bytes_per_value


def uniform_head_counts(model) -> list[int]:
    """Query heads per layer a runtime-safe mask may keep (ascending): multiples of the KV group size up to the
    smallest number of whole groups every layer still stores, that the config class accepts where the family's
    config can describe pruned heads at all (`config_rejects_counts`)."""
    size = kv_group_size(model)
    layers, heads = head_grid(model)
    whole = kept_mask(model).view(layers, heads // size, size).all(-1)  # (L, G) groups still stored whole
    most = int(whole.sum(-1).min())
    counts = [k * size for k in range(1, most + 1)]
    if adapter_for(model).explicit_head_dim:
        counts = [n for n in counts if config_rejects_counts(model.config, n, n // size) is None]
    return counts
