"""Questions about a (possibly pruned) model's heads, answered from its adapter and config.

Heads are always named by their *original* index (0..num_heads-1), also in a physically pruned model: the
config records which original heads each layer still stores (`headprune_heads`) and, for grouped-query
attention, which original key/value head every stored KV slot holds (`headprune_kv_heads`). Every mask and
score map has the shape `head_grid(model)` = (num_layers, num_heads) of the original model.
"""
from __future__ import annotations

import operator

import torch
from torch import nn

from ..core.errors import UserError
from ..core.types import Task
from .adapters import adapter_for

_TASK_SUFFIXES: tuple[tuple[str, Task], ...] = (
    ("ForSequenceClassification", "classification"), ("ForImageClassification", "classification"),
    ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"), ("ForMaskedLM", "masked-lm"))


def task_of(model) -> Task:
    """'classification', 'causal-lm' or 'masked-lm', from the model class's task-head suffix."""
    name = type(model).__name__
    for suffix, task in _TASK_SUFFIXES:
        if name.endswith(suffix):
            return task
    raise UserError(f"{name} has no task headprune can evaluate; load it as a sequence classifier, "
                    "a causal language model or a masked language model")


def get_path(root: nn.Module, path: str) -> nn.Module:
    """`root.a.b.c` for path 'a.b.c' (ModuleList indices work too)."""
    return operator.attrgetter(path)(root) if path else root


def blocks(model) -> list[nn.Module]:
    """The transformer blocks (one per layer), in order."""
    return list(get_path(model.base_model, adapter_for(model).layers))


def num_layers(model) -> int:
    return int(model.config.num_hidden_layers)


def num_heads(model) -> int:
    """Query heads per layer of the original (unpruned) model."""
    config = model.config
    return int(getattr(config, "headprune_num_heads", None) or config.num_attention_heads)


def num_kv_heads(model) -> int:
    """Key/value heads per layer of the original model (= num_heads without grouped-query attention)."""
    config = model.config
    stored = getattr(config, "headprune_num_kv_heads", None)
    if stored:
        return int(stored)
    if adapter_for(model).gqa:
        return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    return num_heads(model)


def head_dim(model) -> int:
    config = model.config
    explicit = getattr(config, "head_dim", None)
    return int(explicit or config.hidden_size // num_heads(model))


def head_grid(model) -> tuple[int, int]:
    """(num_layers, num_query_heads) of the original model: the shape of every mask and score map."""
    adapter_for(model)
    return num_layers(model), num_heads(model)


def kv_group_size(model) -> int:
    """Query heads sharing one key/value head (1 without grouped-query attention)."""
    return num_heads(model) // num_kv_heads(model)


def kv_group_of(model) -> list[int]:
    """For each original query head, the original key/value head (group) it reads from."""
    size = kv_group_size(model)
    return [h // size for h in range(num_heads(model))]


def is_gqa(model) -> bool:
    return num_kv_heads(model) != num_heads(model)


def present_heads(model) -> list[list[int]]:
    """Per layer, the original query-head ids physically stored, in storage order."""
    stored = getattr(model.config, "headprune_heads", None)
    if stored is not None:
        return [list(map(int, layer)) for layer in stored]
    return [list(range(num_heads(model))) for _ in range(num_layers(model))]


def present_kv_heads(model) -> list[list[int]]:
    """Per layer, the original key/value head held by each stored KV slot (may repeat, see `surgery`)."""
    stored = getattr(model.config, "headprune_kv_heads", None)
    if stored is not None:
        return [list(map(int, layer)) for layer in stored]
    return [list(range(num_kv_heads(model))) for _ in range(num_layers(model))]


def is_pruned(model) -> bool:
    """True when `model` was physically pruned by headprune (its config records the kept heads)."""
    return getattr(model.config, "headprune_heads", None) is not None


def kept_mask(model) -> torch.Tensor:
    """The heads a (possibly pruned) model still stores, as a keep mask (L, H)."""
    keep = torch.zeros(head_grid(model), dtype=torch.bool)
    for layer, heads in enumerate(present_heads(model)):
        keep[layer, heads] = True
    return keep


def out_projections(model) -> list[nn.Module]:
    """Per layer, the attention output projection (the module the head gates sit in front of)."""
    adapter = adapter_for(model)
    return [get_path(block, adapter.o) for block in blocks(model)]


def ffn_projections(model) -> list[tuple[nn.Module, nn.Module]]:
    """Per layer, the feed-forward sub-block's (first projection, output projection); [] when the family's
    adapter does not name them (see `Adapter.ffn_in`)."""
    adapter = adapter_for(model)
    if not (adapter.ffn_in and adapter.ffn_out):
        return []
    return [(get_path(block, adapter.ffn_in), get_path(block, adapter.ffn_out)) for block in blocks(model)]


def attention_modules(model) -> list[nn.Module]:
    """Per layer, the module that computes attention (its output is recorded as `attentions`)."""
    adapter = adapter_for(model)
    return [get_path(block, adapter.attention) for block in blocks(model)]


def parameter_count(model) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def max_positions(model_or_config) -> int | None:
    """Tokens per example the model can read (None: rotary positions, no hard limit)."""
    config = getattr(model_or_config, "config", model_or_config)
    return adapter_for(config).max_positions(config)


def to_keep_tensor(keep, model) -> torch.Tensor:
    """Validate `keep` (bool tensor / numpy array / nested list) and return a CPU bool tensor (L, H)."""
    expected = head_grid(model)
    if keep is None:
        return torch.ones(expected, dtype=torch.bool)
    try:
        tensor = torch.as_tensor(keep.copy() if hasattr(keep, "copy") and not torch.is_tensor(keep) else keep)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"keep mask must be a bool array of shape {expected}: {exc}") from None
    if tuple(tensor.shape) != expected:
        raise UserError(f"keep mask has shape {tuple(tensor.shape)}, expected (num_layers, num_heads) = {expected}")
    if tensor.dtype != torch.bool:
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
            raise UserError(f"keep mask must hold booleans (True = keep), got dtype {tensor.dtype}")
        if not bool(((tensor == 0) | (tensor == 1)).all()):
            raise UserError("keep mask must hold booleans or 0/1 values (True = keep)")
        tensor = tensor.bool()
    return tensor.detach().to("cpu")
