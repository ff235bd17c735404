"""DistilBERT: a post-norm encoder whose attention module applies its output projection itself."""
from __future__ import annotations

from torch import nn

from ..adapters import Adapter


def _counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.n_heads = n_q


ADAPTER = Adapter(
    family="distilbert",
    model_types=("distilbert",),
    layers="transformer.layer",
    attention="attention",
    q="attention.q_lin",
    k="attention.k_lin",
    v="attention.v_lin",
    o="attention.out_lin",
    o_inside_attention=True,
    post_norm=True,
    ffn_in="ffn.lin1",
    ffn_out="ffn.lin2",
    update_counts=_counts,
    classifier_heads=("pre_classifier", "classifier"),
    tiny=dict(dim=32, n_layers=3, n_heads=4, hidden_dim=37),
)
