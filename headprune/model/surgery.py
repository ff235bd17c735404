"""Physical head pruning: `prune(model, keep)` returns a smaller copy with the same outputs as masking.

A copy's q/k/v projections lose the removed heads' rows and its output projection loses their columns, so the
model really gets smaller and faster. What is stored, per layer:

* the kept query heads, in original order (`config.headprune_heads`, original head ids);
* grouped-query attention: a key/value head goes only when every query head that shares it goes.
  `repeat_kv` maps stored query head i to stored KV slot i // n_rep with one n_rep per layer, so when kept
  groups keep *different* numbers of query heads, n_rep becomes the gcd of those numbers and a KV head is
  stored once per n_rep of its query heads (`config.headprune_kv_heads` lists the original KV head in every
  slot). Outputs are exact; the KV cache then holds those copies. Keeping equal numbers of query heads per
  group (`units.to_units(..., "group-equal")`) avoids any copy;
* a layer that loses every head keeps only its output projection's bias: its attention module becomes a
  `HeadlessAttention` that returns that bias (or nothing, where the projection sits outside it).
"""
from __future__ import annotations

import copy
import math

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn

from .adapters import adapter_for, linear_shape
from .intervene import private_copy
from .layout import (
    blocks,
    get_path,
    head_dim,
    kv_group_size,
    num_heads,
    num_kv_heads,
    present_heads,
    present_kv_heads,
    to_keep_tensor,
)


def head_slots(positions: list[int], dh: int) -> torch.Tensor:
    """Feature indices of the given head slots (slot p covers p*dh:(p+1)*dh)."""
    if not positions:
        return torch.zeros(0, dtype=torch.long)
    return (torch.tensor(positions)[:, None] * dh + torch.arange(dh)).flatten()


def _new_param(tensor: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(tensor.clone(), requires_grad=like.requires_grad)


def _select_out_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep output features `index` of a Linear (weight rows) or Conv1D (weight columns), in place."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight = _new_param(module.weight[index], module.weight)
            module.out_features = len(index)
        else:  # Conv1D: weight (in, out)
            module.weight = _new_param(module.weight[:, index], module.weight)
            module.nf = len(index)
        if module.bias is not None:
            module.bias = _new_param(module.bias[index], module.bias)


def _select_in_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep input features `index` of a Linear (weight columns) or Conv1D (weight rows), in place."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight = _new_param(module.weight[:, index], module.weight)
            module.in_features = len(index)
        else:
            module.weight = _new_param(module.weight[index], module.weight)


class HeadlessAttention(nn.Module):
    """The attention of a layer with no head left: outputs width-0 context, projected (bias only) where the
    family's attention module applies its output projection itself. Holds the original module's children
    (their weights are empty now), so parameter names and saved checkpoints do not change."""

    def __init__(self, original: nn.Module, out_path: str, dh: int):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        for name, param in original.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in original.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in original._non_persistent_buffers_set)
        self.layer_idx = getattr(original, "layer_idx", None)
        self.out_path, self.head_dim = out_path, dh

    def forward(self, hidden_states=None, *args, **kwargs):
        if hidden_states is None:
            hidden_states = args[0]
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # (B, T, 0)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and self.layer_idx is not None and hasattr(cache, "update"):
            kv = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[1], self.head_dim)
            cache.update(kv, kv, self.layer_idx)  # keeps the cache's sequence length right for this layer
        if not self.out_path:
            return empty, None
        proj = get_path(self, self.out_path)  # output = its bias alone
        out = hidden_states.new_zeros(*hidden_states.shape[:-1], linear_shape(proj)[1])
        return (out if proj.bias is None else out + proj.bias), None


def _kv_layout(kept: list[int], present_kv_slot: dict[int, int], group_size: int) -> tuple[list[int], list[int]]:
    """KV slots for kept query heads: (original KV head per new slot, source slot per new slot).

    Each kept group g with c_g query heads gets c_g / n_rep copies, n_rep = gcd over kept groups.
    """
    groups: dict[int, list[int]] = {}
    for h in kept:
        groups.setdefault(h // group_size, []).append(h)
    if not groups:
        return [], []
    n_rep = math.gcd(*(len(hs) for hs in groups.values()))
    kv_ids, sources = [], []
    for g, hs in groups.items():
        for _ in range(len(hs) // n_rep):
            kv_ids.append(g)
            sources.append(present_kv_slot[hs[0]])
    return kv_ids, sources


def _make_headless(block: nn.Module, adapter, dh: int) -> None:
    attention = get_path(block, adapter.attention)
    if isinstance(attention, HeadlessAttention):
        return
    out_path = adapter.o[len(adapter.attention) + 1:] if adapter.o_inside_attention else ""
    parent_path, _, name = adapter.attention.rpartition(".")
    setattr(get_path(block, parent_path), name, HeadlessAttention(attention, out_path, dh))


def prune_in_place(model: nn.Module, keep: torch.Tensor) -> None:
    """Remove every stored head with keep=False from `model` (a private copy), updating its config."""
    adapter = adapter_for(model)
    dh, group_size = head_dim(model), kv_group_size(model)
    present, present_kv = present_heads(model), present_kv_heads(model)
    new_heads, new_kv_heads = [], []
    for layer, block in enumerate(blocks(model)):
        heads, kv_slots = present[layer], present_kv[layer]
        n_rep = len(heads) // len(kv_slots) if kv_slots else 1
        kept = [h for h in heads if keep[layer, h]]
        q_pos = [heads.index(h) for h in kept]
        if adapter.gqa:
            kv_ids, kv_pos = _kv_layout(kept, {h: heads.index(h) // n_rep for h in heads}, group_size)
        else:
            kv_ids, kv_pos = kept, q_pos
        q_index, kv_index = head_slots(q_pos, dh), head_slots(kv_pos, dh)
        if adapter.fused_qkv:
            width = len(heads) * dh
            fused = torch.cat([q_index, kv_index + width, kv_index + 2 * width])
            _select_out_features(get_path(block, adapter.fused_qkv), fused)
        else:
            for path, index in ((adapter.q, q_index), (adapter.k, kv_index), (adapter.v, kv_index)):
                _select_out_features(get_path(block, path), index)
        _select_in_features(get_path(block, adapter.o), q_index)
        adapter.update_counts(get_path(block, adapter.attention), len(kept), len(kv_ids), dh)
        if not kept:
            _make_headless(block, adapter, dh)
        new_heads.append(kept)
        new_kv_heads.append(kv_ids)
    _record_structure(model, new_heads, new_kv_heads)


def config_rejects_counts(config, num_heads: int, num_kv_heads: int) -> str | None:
    """Why transformers refuses `config` with these head counts (its own class validators, as run by
    `save_pretrained` and `from_pretrained`), or None when it accepts them. E.g. transformers 5's LlamaConfig
    demands hidden_size % num_attention_heads == 0 even though the config carries `head_dim`."""
    trial = copy.deepcopy(config)
    trial.num_attention_heads = num_heads
    if hasattr(trial, "num_key_value_heads"):
        trial.num_key_value_heads = num_kv_heads
    try:
        trial.validate()
    except (StrictDataclassError, ValueError, TypeError) as exc:
        cause = exc.__cause__ or exc  # the validator's own message
        return f"{type(config).__name__}: {cause}"
    return None


def _record_structure(model: nn.Module, heads: list[list[int]], kv_heads: list[list[int]]) -> None:
    """Store the kept heads in the config; uniform GQA shapes also get plain-HF head counts where the
    config class accepts them (else it keeps the original counts, so it still validates and saves)."""
    config, adapter = model.config, adapter_for(model)
    n_heads, n_kv, dh = num_heads(model), num_kv_heads(model), head_dim(model)
    config.headprune_num_heads, config.headprune_num_kv_heads = n_heads, n_kv
    config.headprune_heads = heads
    if adapter.gqa:
        config.headprune_kv_heads = kv_heads
        config.head_dim = dh
        shapes = {(len(h), len(kv)) for h, kv in zip(heads, kv_heads)}
        uniform = len(shapes) == 1 and min(shapes)[0] > 0
        plain = uniform and config_rejects_counts(config, *min(shapes)) is None
        config.num_attention_heads, config.num_key_value_heads = min(shapes) if plain else (n_heads, n_kv)


def is_plain_loadable(model: nn.Module) -> bool:
    """True when a saved copy of `model` loads with plain `from_pretrained` (no headprune needed): every
    layer stores all its heads, or the config's own head counts describe every layer."""
    heads = present_heads(model)
    if all(len(h) == num_heads(model) for h in heads):
        return True
    config = model.config
    return adapter_for(model).explicit_head_dim and all(len(h) == config.num_attention_heads for h in heads)


def prune(model: nn.Module, keep) -> nn.Module:
    """A new model with the heads where keep=False physically removed; `model` itself is unchanged.

    keep: shaped `head_grid(model)`, True = keep (heads already pruned away stay away). The result's outputs
    equal `masked(model, keep)` up to float rounding. See the module docstring for what is stored.
    """
    keep = to_keep_tensor(keep, model)
    pruned = private_copy(model)
    prune_in_place(pruned, keep)
    return pruned
