"""Llama-style decoders with grouped-query attention and rotary positions: Llama (SmolLM2), Mistral, Qwen2,
and Qwen3 (whose per-head q/k RMS norms act on the head dimension only, so they are shared by all heads and
pruning leaves them as they are)."""
from __future__ import annotations

from torch import nn

from ..adapters import Adapter


def _counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_key_value_groups = max(n_q // max(n_kv, 1), 1)
    if hasattr(attn, "num_heads"):
        attn.num_heads = n_q
    if hasattr(attn, "num_key_value_heads"):
        attn.num_key_value_heads = n_kv


_COMMON = dict(
    layers="layers",
    attention="self_attn",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    o_inside_attention=True,
    update_counts=_counts,
    gqa=True,
    explicit_head_dim=True,
    causal=True,
    pooling="last",
    positions="",
    classifier_heads=("score",),
)
_TINY = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
             intermediate_size=37, max_position_embeddings=64, pad_token_id=0)

ADAPTERS = (
    Adapter(family="llama", model_types=("llama",), **_COMMON, tiny=_TINY),
    Adapter(family="mistral", model_types=("mistral",), **_COMMON,
            tiny={**_TINY, "num_key_value_heads": 3, "sliding_window": None}),
    Adapter(family="qwen2", model_types=("qwen2",), **_COMMON, tiny=_TINY),
    Adapter(family="qwen3", model_types=("qwen3",), **_COMMON, tiny={**_TINY, "head_dim": 8}),
)
