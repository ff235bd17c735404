"""What a mask costs and saves, analytically: FLOPs per token and parameters after pruning.

FLOPs (forward, per token), after Kaplan et al. 2020 (Table 1) and nanoGPT's `estimate_mfu`: 2 FLOPs per
multiply-accumulate of every linear layer in the transformer blocks (q/k/v/o of the kept heads, the
feed-forward block) and of the task head (LM head per token; a classifier's pooler/head once per sequence,
so divided by `seq_len`), plus the attention matmuls, 2·2·T·d_head per kept head per token (scores q·kᵀ and
the weighted sum of values; T = seq_len for bidirectional attention, (seq_len+1)/2 on average for causal
attention, whatever the task head). Embedding lookups, LayerNorms, softmax and activations are not counted.
"""
from __future__ import annotations

from torch import nn

from ..core.errors import UserError
from ..model.adapters import adapter_for, linear_shape
from ..model.layout import (
    blocks,
    get_path,
    head_dim,
    kv_group_of,
    parameter_count,
    present_heads,
    present_kv_heads,
    task_of,
    to_keep_tensor,
)


def _removed_heads(model, keep) -> list[tuple[int, int, int]]:
    """Per layer: (stored query heads, query heads removed by `keep`, KV heads removed by `keep`)."""
    keep = to_keep_tensor(keep, model)
    group = kv_group_of(model)
    gqa = adapter_for(model).gqa
    out = []
    for layer, (heads, kv_heads) in enumerate(zip(present_heads(model), present_kv_heads(model))):
        removed = [h for h in heads if not keep[layer, h]]
        kept_groups = {group[h] for h in heads if keep[layer, h]}
        removed_kv = len({g for g in kv_heads if g not in kept_groups})
        if not gqa:
            removed_kv = len(removed)
        out.append((len(heads), len(removed), removed_kv))
    return out


def _attention_bias_flags(model, block: nn.Module) -> tuple[bool, bool]:
    """Whether the query and key/value projections of `block` carry a bias."""
    adapter = adapter_for(model)
    if adapter.fused_qkv:
        has = get_path(block, adapter.fused_qkv).bias is not None
        return has, has
    return get_path(block, adapter.q).bias is not None, get_path(block, adapter.k).bias is not None


def flops_per_token(model, keep=None, seq_len: int = 128) -> int:
    """Analytic forward FLOPs per token of `model` with the heads where keep=False removed (see module doc)."""
    if seq_len < 1:
        raise UserError(f"seq_len must be a positive number of tokens, got {seq_len}", option="seq_len")
    keep = to_keep_tensor(keep, model) if keep is not None else None
    dh, hidden = head_dim(model), int(model.config.hidden_size)
    context = (seq_len + 1) / 2 if adapter_for(model).causal else seq_len
    removed = _removed_heads(model, keep) if keep is not None else [(len(h), 0, 0) for h in present_heads(model)]
    macs = 0.0
    block_modules = set()
    for block, (stored, gone, gone_kv) in zip(blocks(model), removed):
        for module in block.modules():
            block_modules.add(module)
            shape = linear_shape(module)
            if shape is not None:
                macs += shape[0] * shape[1]
        macs -= gone * 2 * dh * hidden + gone_kv * 2 * dh * hidden  # q rows + o columns; k and v rows
        macs += (stored - gone) * 2 * context * dh  # q·kᵀ and probs·v
    per_sequence = 1.0 / seq_len if task_of(model) == "classification" else 1.0  # LM heads run at every token
    for module in model.modules():
        if module not in block_modules:
            shape = linear_shape(module)
            if shape is not None:
                macs += shape[0] * shape[1] * per_sequence
    return int(round(2 * macs))


def params_after(model, keep) -> int:
    """Parameters left after `prune(model, keep)` (tied weights once; GQA: ideal, without the KV copies
    `prune` stores when kept groups keep different numbers of query heads)."""
    dh, hidden = head_dim(model), int(model.config.hidden_size)
    total = parameter_count(model)
    for block, (_, gone, gone_kv) in zip(blocks(model), _removed_heads(model, keep)):
        q_bias, kv_bias = _attention_bias_flags(model, block)
        total -= gone * dh * (hidden + q_bias) + gone * dh * hidden  # q rows (+bias), o columns
        total -= gone_kv * 2 * dh * (hidden + kv_bias)  # k and v rows (+bias)
    return int(total)
