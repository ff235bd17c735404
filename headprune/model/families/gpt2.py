"""GPT-2: a pre-norm causal decoder with one fused Conv1D for q|k|v and Conv1D weights stored (in, out)."""
from __future__ import annotations

from torch import nn

from ..adapters import Adapter


def _counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_heads = n_q
    attn.split_size = n_q * head_dim  # c_attn output is split into q|k|v chunks of this width


ADAPTER = Adapter(
    family="gpt2",
    model_types=("gpt2",),
    layers="h",
    attention="attn",
    fused_qkv="attn.c_attn",
    o="attn.c_proj",
    o_inside_attention=True,
    update_counts=_counts,
    causal=True,
    pooling="last",
    positions="n_positions",
    conv1d=True,
    classifier_heads=("score",),
    tiny=dict(n_embd=32, n_layer=3, n_head=4, n_positions=64, pad_token_id=0),
)
