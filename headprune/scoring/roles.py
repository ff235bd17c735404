"""Head roles for teaching: tag heads from their average attention statistics, each tag with its evidence.

Tags (a head may have several, or none):
- previous-token / next-token (positional, Voita et al. 2019): mean weight on key i-1 / i+1.
- self: mean weight on its own position.
- sink (no-op, Clark et al. 2019): mean weight on the first token ([CLS] or BOS) or, in encoders, on the
  last token ([SEP]) — attention parked on a token that carries little, i.e. the head mostly does nothing.
- broad: normalised entropy (entropy / log #visible keys) near 1, attention spread almost evenly
  (bag-of-words averaging, Clark et al. 2019).
- focused: mean max weight high without one of the positional/sink/self tags explaining it.
Statistics come from `headprune.scoring.attention.attention_statistics`, averaged over examples.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..model.adapters import is_causal
from ..model.layout import present_heads
from ..sources.batches import limit_examples
from .attention import attention_statistics, batch_attentions

PREVIOUS_TOKEN_MIN = 0.5  # mean weight on key i-1
NEXT_TOKEN_MIN = 0.5  # mean weight on key i+1
SELF_MIN = 0.5  # mean weight on key i
SINK_MIN = 0.5  # mean weight on the first ([CLS]/BOS) or last ([SEP]) token
BROAD_MIN = 0.9  # mean normalised entropy
FOCUSED_MIN = 0.8  # mean max weight, when no positional/sink/self tag applies
COLUMNS = ["layer", "head", "role", "statistic", "value"]

_RULES = (  # (role, statistic key, threshold, statistic label)
    ("previous-token", "previous", PREVIOUS_TOKEN_MIN, "mean attention on the previous token"),
    ("next-token", "next", NEXT_TOKEN_MIN, "mean attention on the next token"),
    ("self", "self", SELF_MIN, "mean attention on its own token"),
    ("sink", "first", SINK_MIN, "mean attention on the first token ([CLS]/BOS)"),
    ("sink", "last", SINK_MIN, "mean attention on the last token ([SEP])"),
    ("broad", "normalised_entropy", BROAD_MIN, "mean normalised attention entropy"),
)


def roles_from_statistics(statistics: dict, heads: list[list[int]] | None = None) -> pd.DataFrame:
    """Tags from per-head mean statistics: `statistics[key][layer]` is an array over the layer's stored
    heads (an (L, H) array or a ragged list), keys as in `attention_statistics`.

    heads: original head id of each stored head per layer (default 0..H-1). One row per tag.
    """
    rows = []
    for layer, confidences in enumerate(statistics["confidence"]):
        ids = heads[layer] if heads is not None else list(range(len(confidences)))
        for slot, head in enumerate(ids):
            tagged = False
            for role, key, threshold, label in _RULES:
                value = float(statistics[key][layer][slot])
                if np.isfinite(value) and value >= threshold:
                    rows.append((layer, head, role, label, value))
                    tagged = True
            confidence = float(confidences[slot])
            if not tagged and np.isfinite(confidence) and confidence >= FOCUSED_MIN:
                rows.append((layer, head, "focused", "mean max attention weight", confidence))
    return pd.DataFrame(rows, columns=COLUMNS).astype({"layer": "int64", "head": "int64", "value": "float64"})


def _example_mean(values: list[np.ndarray]) -> np.ndarray:
    """Mean over examples of stacked (B, H) arrays, ignoring NaN; NaN where no example qualifies."""
    stacked = np.concatenate(values)  # (N, H)
    finite = np.isfinite(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(0), np.where(finite, stacked, 0.0).sum(0) / np.maximum(finite.sum(0), 1), np.nan)


def roles_from_attention(attentions: list[torch.Tensor], attention_mask: torch.Tensor | None, *,
                         causal: bool, heads: list[list[int]] | None = None) -> pd.DataFrame:
    """Tags from attention weights: per layer (B, H, T, T), `attention_mask` (B, T); means over examples."""
    per_layer = [attention_statistics(a, attention_mask, causal=causal) for a in attentions]
    statistics = {key: [_example_mean([s[key].double().numpy()]) for s in per_layer] for key in per_layer[0]}
    return roles_from_statistics(statistics, heads)


def head_roles(model, batches, *, max_examples: int | None = 64) -> pd.DataFrame:
    """Role tags of every present head of `model` on the first `max_examples` examples of `batches`.

    Columns `layer, head, role, statistic, value` (one row per tag; untagged heads have no row).
    Attention weights come from one pass per batch on an eager-attention twin (`intervene.attention_view`).
    """
    batches = limit_examples(batches, max_examples)
    causal = is_causal(model)
    present = present_heads(model)
    collected: dict[str, list[list[np.ndarray]]] = {}
    for batch in batches:
        for layer, attn in enumerate(batch_attentions(model, batch)):
            if attn is None:
                continue
            for key, value in attention_statistics(attn, batch.get("attention_mask"), causal=causal).items():
                collected.setdefault(key, [[] for _ in present])[layer].append(value.double().numpy())
    statistics = {key: [_example_mean(parts) if parts else np.zeros(0) for parts in layers]
                  for key, layers in collected.items()}
    return roles_from_statistics(statistics, present)
