"""ViT: a pre-norm image encoder (Python API only: the data loaders, CLI and dashboard are text-only)."""
from __future__ import annotations

from torch import nn

from ..adapters import Adapter


def _counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_attention_heads = n_q


ADAPTER = Adapter(
    family="vit",
    model_types=("vit",),
    layers="layers",
    attention="attention",
    q="attention.q_proj",
    k="attention.k_proj",
    v="attention.v_proj",
    o="attention.o_proj",
    o_inside_attention=True,
    update_counts=_counts,
    positions="",
)
