"""Attention weights: per-head probabilities, statistics over them, and the metrics built on them
(`entropy`, `confidence`, `attention_mean`; Voita et al. 2019, Clark et al. 2019).

Fast backends (sdpa, flash) never materialise attention probabilities, so they come from
`headprune.model.intervene.attention_view`: a twin of the model sharing its weights with eager attention. The
shared model is never switched, so other threads' passes are untouched.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..model.adapters import is_causal
from ..model.forward import model_device, model_inputs, to_device
from ..model.intervene import attention_view, masked
from ..model.layout import head_grid, num_layers, present_heads
from .registry import ATTENTION_METRICS, Contributions


def batch_attentions(model, batch: dict) -> list[torch.Tensor | None]:
    """Attention probabilities of one batch, per layer (B, H_present, T, T) float32 on the CPU.

    Heads are in storage order (`present_heads(model)[layer]` gives their original ids); a layer pruned down
    to no heads gives None. Rows of padded query positions are meaningless; keys at padded positions carry
    (numerically) zero weight. Any active `masked`/`gated` block applies (a mask changes the attention of
    later layers only).
    """
    with attention_view(model) as twin, torch.inference_mode():
        inputs = model_inputs(twin, to_device(batch, model_device(model)))
        attentions = list(twin(**inputs, output_attentions=True).attentions or ())
    layers = [layer for layer, heads in enumerate(present_heads(model)) if heads]
    if len(attentions) != len(layers):
        raise UserError(f"{type(model).__name__} returned no attention weights; load it with attn_implementation='eager'")
    out: list[torch.Tensor | None] = [None] * num_layers(model)
    for layer, weights in zip(layers, attentions):
        out[layer] = weights.float().cpu()
    return out


def attention_pattern(model, batch: dict, example_index: int, layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    """One head's attention map for one example: (weights (T, T) over its non-pad tokens, token ids (T,)).

    `head` is the original head id; rows are queries, columns keys, each row sums to 1 over visible keys.
    """
    n_layers, n_heads = head_grid(model)
    batch_size = int(batch["input_ids"].shape[0])
    if not 0 <= example_index < batch_size:
        raise UserError(f"example index must be in [0, {batch_size}), got {example_index}")
    if not 0 <= layer < n_layers or not 0 <= head < n_heads:
        raise UserError(f"head ({layer}, {head}) is outside the {n_layers} x {n_heads} head grid")
    present = present_heads(model)[layer]
    if head not in present:
        raise UserError(f"head ({layer}, {head}) was pruned away; pick a head the model still has")
    one = {k: v[example_index:example_index + 1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    weights = batch_attentions(model, one)[layer][0, present.index(head)]  # (T, T)
    mask = batch.get("attention_mask")
    keep = mask[example_index].bool() if mask is not None else torch.ones(weights.shape[0], dtype=torch.bool)
    ids = batch["input_ids"][example_index][keep]
    return weights[keep][:, keep].numpy(), ids.numpy()


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of `values` (B, H, R) over rows where `valid` (B, R) is True; NaN where none is."""
    valid = valid[:, None, :].to(values.dtype)  # (B, 1, R)
    count = valid.sum(-1)  # (B, 1)
    total = (values * valid).sum(-1)  # (B, H)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def attention_statistics(attn: torch.Tensor, attention_mask: torch.Tensor | None, *, causal: bool) -> dict[str, torch.Tensor]:
    """Per-example, per-head means over query tokens of one layer's attention `attn` (B, H, T, T).

    Only non-pad queries and keys count (`attention_mask` (B, T), 1 = token). Returns (B, H) tensors:
    `entropy` (nats), `normalised_entropy` (entropy / log #visible keys, rows with >= 2 visible keys),
    `confidence` (max weight, Voita et al. 2019), `mean_abs` (mean |weight| over the non-pad keys, = 1/#keys
    for every head: the teaching example), `previous` / `next` / `self` (weight on key i-1 / i+1 / i),
    `first` (weight on the first token: [CLS] or BOS) and `last` (weight on the last token: [SEP]).
    Causal models: `next` and `last` are NaN (never visible), `self`/`first` skip the first query, which
    can only see itself. NaN where an example has no qualifying query.
    """
    attn = attn.float()
    batch, _, length, _ = attn.shape
    m = torch.ones(batch, length, dtype=torch.bool) if attention_mask is None else attention_mask.bool().cpu()  # (B, T)
    n_keys = m.sum(-1).clamp(min=1)  # (B,)
    visible = m[:, None, :] & m[:, :, None]  # (B, T, T)
    if causal:
        visible = visible & torch.ones(length, length, dtype=torch.bool).tril()
    n_visible = visible.sum(-1)  # (B, T)
    entropy = torch.special.entr(attn).sum(-1)  # (B, H, T)
    log_visible = torch.log(n_visible.clamp(min=2).float())[:, None, :]  # (B, 1, T)
    first_pos = m.int().argmax(-1)  # (B,) first non-pad position
    last_pos = length - 1 - m.flip(-1).int().argmax(-1)  # (B,)
    gather = lambda pos: attn.gather(-1, pos[:, None, None, None].expand(batch, attn.shape[1], length, 1))[..., 0]
    not_first = m.clone()
    not_first[torch.arange(batch), first_pos] = False
    nan = torch.full((batch, attn.shape[1]), float("nan"))
    pairs = m[:, 1:] & m[:, :-1]  # (B, T-1)
    stats = {
        "entropy": _masked_mean(entropy, m),
        "normalised_entropy": _masked_mean(entropy / log_visible, m & (n_visible >= 2)),
        "confidence": _masked_mean(attn.amax(-1), m),
        "mean_abs": _masked_mean((attn.abs() * m[:, None, None, :]).sum(-1) / n_keys[:, None, None], m),
        "previous": _masked_mean(attn.diagonal(offset=-1, dim1=-2, dim2=-1), pairs),
        "self": _masked_mean(attn.diagonal(dim1=-2, dim2=-1), not_first if causal else m),
        "first": _masked_mean(gather(first_pos), not_first if causal else m),
    }
    stats["next"] = nan if causal else _masked_mean(attn.diagonal(offset=1, dim1=-2, dim2=-1), pairs)
    stats["last"] = nan if causal else _masked_mean(gather(last_pos), m)
    return stats


def attention_contributions(model, batches, keep=None, progress: Progress | None = None) -> dict[str, Contributions]:
    """`entropy`, `confidence` and `attention_mean` per example from one attention pass under `keep`."""
    n_layers, n_heads = head_grid(model)
    present, causal = present_heads(model), is_causal(model)
    out = {name: [] for name in ATTENTION_METRICS}
    weights = []
    with masked(model, keep):
        for index, batch in enumerate(batches):
            size = int(batch["input_ids"].shape[0])
            per_metric = {name: torch.full((size, n_layers, n_heads), float("nan"), dtype=torch.float64) for name in out}
            for layer, attn in enumerate(batch_attentions(model, batch)):
                if attn is None:
                    continue
                stats = attention_statistics(attn, batch.get("attention_mask"), causal=causal)
                for name, key in ATTENTION_METRICS.items():
                    per_metric[name][:, layer, present[layer]] = stats[key].double()
            for name in out:
                out[name].append(per_metric[name])
            mask = batch.get("attention_mask", torch.ones(size, 1))
            weights.append((mask.sum(-1) > 0).double())
            report(progress, (index + 1) / len(batches), f"attention: batch {index + 1}/{len(batches)}")
    weight = torch.cat(weights)
    return {name: Contributions(torch.cat(parts), weight) for name, parts in out.items()}
