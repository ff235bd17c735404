"""The adapter registry: every fact about a model family that headprune needs lives in its `Adapter`.

transformers 5 has no `head_mask` / `prune_heads`, so headprune needs to know, per architecture family: the
list of transformer blocks, the query/key/value projections, the output projection (whose input is the
concatenation of the heads' outputs, head-major: columns ``h*head_dim:(h+1)*head_dim`` are head h), the module
that computes attention (replaced when a layer loses every head), the attributes holding head counts, whether
attention is causal, where a classifier reads the sequence, and a tiny config for tests.

Adding a family = one `Adapter(...)` in a module of `headprune.model.families` (listed in its `FAMILIES`)
and a line in the tiny-config test list; nothing else in headprune names a family or a model class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from torch import nn

from ..core.errors import UnsupportedModelError

CountsFn = Callable[[nn.Module, int, int, int], None]


@dataclass(frozen=True)
class ClassifierTail:
    """What a BERT-like classifier's last steps are, so the live evaluator can run them on packed tokens.

    attention_output: block path of the module computing `LayerNorm(dense(context) + residual)`.
    feed_forward: `(block, hidden) -> hidden`, the block's feed-forward sub-block with its residual and norm.
    logits: `(model, hidden (B, 1, d) at position 0) -> (B, C)`, pooler and classifier in eval mode.
    """

    attention_output: str
    feed_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Adapter:
    """Where attention lives in one architecture family (dotted attribute paths) and what it computes.

    layers: from the base model (`model.base_model`) to the ModuleList of blocks.
    attention: from a block to the module that computes attention (swapped out when no head is left).
    q, k, v: from a block to the projections; `fused_qkv` names one Conv1D holding q|k|v (GPT-2).
    o: from a block to the output projection (input = heads' outputs, head-major).
    o_inside_attention: the attention module applies `o` itself (its output is already projected).
    update_counts: sets the attention module's head-count attributes to (query heads, kv heads, head_dim).
    gqa: query heads share key/value heads (`num_key_value_heads` in the config).
    explicit_head_dim: the config carries `head_dim`, so a uniformly pruned model can say its head size.
    post_norm: blocks normalise after each residual sum (BERT-style); otherwise before each sub-block.
    ffn_in, ffn_out: post-norm families only, from a block to the feed-forward sub-block's first projection
        (its input is the residual the feed-forward output is added to) and its output projection ("": not
        named; least-squares recovery then cannot refit the feed-forward output).
    causal: every token attends only to earlier ones, whatever the task head (decoders).
    pooling: where a sequence classifier reads the sequence: the first token ([CLS]) or the last real one.
    positions: the config attribute holding the number of learned absolute positions ("" for rotary
        embeddings, which have no hard limit), and `position_offset` positions the family reserves
        (RoBERTa starts counting after the padding id).
    conv1d: projections store their weight as (in, out) (GPT-2's Conv1D) instead of nn.Linear's (out, in).
    classifier_heads: attribute names of a classifier's head modules (trained in full under LoRA).
    classifier_tail: set for BERT-like post-norm encoders whose classifier reads position 0 (live fast path).
    tiny: config keyword arguments of a tiny random model of this family (tests and demos).
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    attention: str
    o: str
    o_inside_attention: bool
    update_counts: CountsFn
    q: str = ""
    k: str = ""
    v: str = ""
    fused_qkv: str = ""
    gqa: bool = False
    explicit_head_dim: bool = False
    post_norm: bool = False
    ffn_in: str = ""
    ffn_out: str = ""
    causal: bool = False
    pooling: Literal["first", "last"] = "first"
    positions: str = "max_position_embeddings"
    position_offset: Callable[[Any], int] = lambda config: 0
    conv1d: bool = False
    classifier_heads: tuple[str, ...] = ("classifier",)
    classifier_tail: ClassifierTail | None = None
    tiny: dict = field(default_factory=dict)

    def max_positions(self, config) -> int | None:
        """Tokens per example the model can read (None: no hard limit)."""
        if not self.positions:
            return None
        value = getattr(config, self.positions, None)
        return None if value is None else int(value) - self.position_offset(config)


def _registry() -> tuple[Adapter, ...]:
    from .families import FAMILIES

    return FAMILIES


def adapters() -> tuple[Adapter, ...]:
    """Every registered adapter."""
    return _registry()


def supported_families() -> tuple[str, ...]:
    return tuple(a.family for a in _registry())


def adapter_for(model_or_config) -> Adapter:
    """The adapter for a model (or its config), or `UnsupportedModelError` naming the supported families."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for adapter in _registry():
        if model_type in adapter.model_types:
            return adapter
    raise UnsupportedModelError(
        f"unsupported architecture {model_type!r}: headprune supports {', '.join(supported_families())}")


def family_of(model) -> str:
    """The adapter family name of `model`."""
    return adapter_for(model).family


def is_causal(model) -> bool:
    """True when `model`'s attention is causal (decoders), whatever its task head."""
    return adapter_for(model).causal


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of an nn.Linear or a GPT-2-style Conv1D, else None."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return None


def in_out_weight(proj: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """A projection's weight (or `weight`, in the projection's own layout) viewed as (in, out): nn.Linear
    stores (out, in), Conv1D (in, out). Its own inverse: applied to an (in, out) tensor it gives the
    projection's layout back."""
    weight = proj.weight if weight is None else weight
    return weight.T if isinstance(proj, nn.Linear) else weight
