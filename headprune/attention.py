"""Attention weights without reloading the model: switch to eager attention for one pass, then switch back.

Fast backends (sdpa, flash) never materialise the attention probabilities, so `output_attentions=True`
(recorded in transformers 5 by hooks on the classes named in the model's `_can_record_outputs`) returns
nothing under them. `eager_attention(model)` switches the model to the eager implementation with
`PreTrainedModel.set_attn_implementation` and restores the original one on exit, even after an exception.

Threads: the switch is per model object, reference counted under a lock, so overlapping blocks (two
Streamlit sessions scoring the same cached model) switch once and restore once, when the last one leaves.
Other threads running the model meanwhile compute the same outputs, only with the slower eager kernels.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator

import numpy as np
import torch

from . import arch
from .evaluate import model_device, to_device

EAGER = "eager"

_LOCK = threading.Lock()
_ACTIVE: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()  # model -> [depth, original]


@contextlib.contextmanager
def eager_attention(model) -> Iterator[None]:
    """Within the block `model` uses eager attention (so attention weights exist); restored afterwards."""
    with _LOCK:
        entry = _ACTIVE.get(model)
        if entry is None:
            original = model.config._attn_implementation
            if original != EAGER:
                model.set_attn_implementation(EAGER)
                if model.config._attn_implementation != EAGER:
                    raise ValueError(
                        f"{type(model).__name__} cannot switch to eager attention at run time; "
                        "load it with attn_implementation='eager' to get attention weights"
                    )
            entry = _ACTIVE[model] = [0, original]
        entry[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _ACTIVE[model]
                if model.config._attn_implementation != entry[1]:
                    model.set_attn_implementation(entry[1])


def batch_attentions(model, batch: dict) -> list[torch.Tensor | None]:
    """Attention probabilities of one batch, per layer (B, H_present, T, T) float32 on the CPU.

    Heads are in storage order (`arch.present_heads(model)[layer]` gives their original ids); a layer
    pruned down to no heads gives None. Rows of padded query positions are meaningless; keys at padded
    positions carry (numerically) zero weight. Any active `masked`/`gated` block applies (a mask changes
    the attention of later layers only).
    """
    inputs = {k: v for k, v in to_device(batch, model_device(model)).items() if k != "labels"}
    if arch.task_of(model) == "causal-lm":
        inputs["use_cache"] = False
    with eager_attention(model), torch.inference_mode():
        attentions = list(model(**inputs, output_attentions=True).attentions or ())
    layers = [layer for layer, heads in enumerate(arch.present_heads(model)) if heads]
    if len(attentions) != len(layers):
        raise ValueError(f"{type(model).__name__} returned no attention weights; load it with attn_implementation='eager'")
    out: list[torch.Tensor | None] = [None] * arch.num_layers(model)
    for layer, weights in zip(layers, attentions):
        out[layer] = weights.float().cpu()
    return out


def attention_pattern(model, batch: dict, example_index: int, layer: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    """One head's attention map for one example: (weights (T, T) over its non-pad tokens, token ids (T,)).

    `head` is the original head id; rows are queries, columns keys, each row sums to 1 over visible keys.
    """
    n_layers, n_heads = arch.head_grid(model)
    batch_size = int(batch["input_ids"].shape[0])
    if not 0 <= example_index < batch_size:
        raise ValueError(f"example index must be in [0, {batch_size}), got {example_index}")
    if not 0 <= layer < n_layers or not 0 <= head < n_heads:
        raise ValueError(f"head ({layer}, {head}) is outside the {n_layers} x {n_heads} head grid")
    present = arch.present_heads(model)[layer]
    if head not in present:
        raise ValueError(f"head ({layer}, {head}) was pruned away; pick a head the model still has")
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


def is_causal(model) -> bool:
    """True for decoder-only language models (each token sees only earlier ones)."""
    return arch.family_of(model) in ("gpt2", "llama", "mistral", "qwen2")
