"""Per-family adapters: where each layer's attention lives and which weight slices belong to head h.

transformers 5 has no `head_mask` / `prune_heads`, so headprune needs to know, per architecture family:
the list of transformer blocks, the query/key/value projections, the output projection (whose input is the
concatenation of the heads' outputs, head-major: columns ``h*head_dim:(h+1)*head_dim`` are head h), the module
that computes attention (replaced when a layer loses every head) and the attributes holding head counts.

Heads are always named by their *original* index (0..num_heads-1), also in a physically pruned model: the
config records which original heads each layer still stores (`headprune_heads`) and, for grouped-query
attention, which original key/value head every stored KV slot holds (`headprune_kv_heads`).
Adding a family = adding one `Adapter(...)` entry to `ADAPTERS` (and a tiny-config test).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

TASKS = ("classification", "causal-lm", "masked-lm")


class UnsupportedModelError(ValueError):
    """The model's architecture has no headprune adapter."""


@dataclass(frozen=True)
class Adapter:
    """Where attention lives in one architecture family (dotted attribute paths).

    layers: from the base model (`model.base_model`) to the ModuleList of blocks.
    attention: from a block to the module that computes attention (swapped out when no head is left).
    q, k, v: from a block to the projections; `fused_qkv` names one Conv1D holding q|k|v (GPT-2).
    o: from a block to the output projection (input = heads' outputs, head-major).
    o_inside_attention: the attention module applies `o` itself (its output is already projected).
    count_attrs: attributes of the attention module to keep equal to (query heads, kv heads, head_dim).
    explicit_head_dim: the config carries `head_dim`, so uniformly pruned models load with plain
        `from_pretrained`.
    post_norm: blocks normalise after each residual sum (BERT-style); otherwise before each sub-block
        (GPT-2, Llama, ViT), so the residual stream itself is never normalised.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    attention: str
    o: str
    o_inside_attention: bool
    q: str = ""
    k: str = ""
    v: str = ""
    fused_qkv: str = ""
    gqa: bool = False
    explicit_head_dim: bool = False
    post_norm: bool = False
    update_counts: Callable[[nn.Module, int, int, int], None] | None = None


def _bert_counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_attention_heads = n_q
    attn.all_head_size = n_q * head_dim


def _distilbert_counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.n_heads = n_q


def _gpt2_counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_heads = n_q
    attn.split_size = n_q * head_dim  # c_attn output is split into q|k|v chunks of this width


def _gqa_counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_key_value_groups = max(n_q // max(n_kv, 1), 1)
    if hasattr(attn, "num_heads"):
        attn.num_heads = n_q
    if hasattr(attn, "num_key_value_heads"):
        attn.num_key_value_heads = n_kv


def _vit_counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_attention_heads = n_q


_BERT_LIKE = dict(
    layers="encoder.layer",
    attention="attention.self",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    o_inside_attention=False,
    post_norm=True,
    update_counts=_bert_counts,
)
_LLAMA_LIKE = dict(
    layers="layers",
    attention="self_attn",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    o_inside_attention=True,
    gqa=True,
    explicit_head_dim=True,
    update_counts=_gqa_counts,
)

ADAPTERS: tuple[Adapter, ...] = (
    Adapter(family="bert", model_types=("bert",), **_BERT_LIKE),
    Adapter(family="roberta", model_types=("roberta", "xlm-roberta", "camembert"), **_BERT_LIKE),
    Adapter(family="electra", model_types=("electra",), **_BERT_LIKE),
    Adapter(
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
        update_counts=_distilbert_counts,
    ),
    Adapter(
        family="gpt2",
        model_types=("gpt2",),
        layers="h",
        attention="attn",
        fused_qkv="attn.c_attn",
        o="attn.c_proj",
        o_inside_attention=True,
        update_counts=_gpt2_counts,
    ),
    Adapter(family="llama", model_types=("llama",), **_LLAMA_LIKE),
    Adapter(family="mistral", model_types=("mistral",), **_LLAMA_LIKE),
    Adapter(family="qwen2", model_types=("qwen2",), **_LLAMA_LIKE),
    Adapter(
        family="vit",
        model_types=("vit",),
        layers="layers",
        attention="attention",
        q="attention.q_proj",
        k="attention.k_proj",
        v="attention.v_proj",
        o="attention.o_proj",
        o_inside_attention=True,
        update_counts=_vit_counts,
    ),
)
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(a.family for a in ADAPTERS)
_BY_MODEL_TYPE = {t: a for a in ADAPTERS for t in a.model_types}


def adapter_for(model_or_config) -> Adapter:
    """The adapter for a model (or its config), or `UnsupportedModelError` naming the supported families."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"unsupported architecture {model_type!r}: headprune supports {', '.join(SUPPORTED_FAMILIES)}"
        ) from None


def family_of(model) -> str:
    """The adapter family name ('bert', 'gpt2', 'llama', ...) of `model`."""
    return adapter_for(model).family


def task_of(model) -> str:
    """'classification', 'causal-lm' or 'masked-lm', from the model class name."""
    name = type(model).__name__
    if name.endswith("ForSequenceClassification") or name.endswith("ForImageClassification"):
        return "classification"
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return "causal-lm"
    if name.endswith("ForMaskedLM"):
        return "masked-lm"
    raise ValueError(
        f"{name} has no task headprune can evaluate; load it as *ForSequenceClassification, *ForCausalLM "
        "or *ForMaskedLM"
    )


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


def present_heads(model) -> list[list[int]]:
    """Per layer, the original query-head ids physically stored, in storage order."""
    stored = getattr(model.config, "headprune_heads", None)
    if stored is not None:
        return [list(map(int, layer)) for layer in stored]
    return [list(range(num_heads(model))) for _ in range(num_layers(model))]


def present_kv_heads(model) -> list[list[int]]:
    """Per layer, the original key/value head held by each stored KV slot (may repeat, see `prune`)."""
    stored = getattr(model.config, "headprune_kv_heads", None)
    if stored is not None:
        return [list(map(int, layer)) for layer in stored]
    return [list(range(num_kv_heads(model))) for _ in range(num_layers(model))]


def out_projections(model) -> list[nn.Module]:
    """Per layer, the attention output projection (the module the mask gate sits in front of)."""
    adapter = adapter_for(model)
    return [get_path(block, adapter.o) for block in blocks(model)]


def in_out_weight(proj: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """A projection's weight (or `weight`, in the projection's own layout) viewed as (in, out): nn.Linear
    stores (out, in), GPT-2's Conv1D (in, out). Its own inverse: applied to an (in, out) tensor it gives the
    projection's layout back."""
    weight = proj.weight if weight is None else weight
    return weight.T if isinstance(proj, nn.Linear) else weight


def attention_modules(model) -> list[nn.Module]:
    """Per layer, the module that computes attention (its output is recorded as `attentions`)."""
    adapter = adapter_for(model)
    return [get_path(block, adapter.attention) for block in blocks(model)]


def is_gqa(model) -> bool:
    return num_kv_heads(model) != num_heads(model)


def parameter_count(model) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def to_keep_tensor(keep, model) -> torch.Tensor:
    """Validate `keep` (bool tensor / numpy array / nested list) and return a CPU bool tensor (L, H)."""
    expected = head_grid(model)
    if keep is None:
        return torch.ones(expected, dtype=torch.bool)
    try:
        tensor = torch.as_tensor(keep.copy() if hasattr(keep, "copy") and not torch.is_tensor(keep) else keep)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"keep mask must be a bool array of shape {expected}: {exc}") from None
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"keep mask has shape {tuple(tensor.shape)}, expected (num_layers, num_heads) = {expected}"
        )
    if tensor.dtype != torch.bool:
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
            raise ValueError(f"keep mask must hold booleans (True = keep), got dtype {tensor.dtype}")
        if not bool(((tensor == 0) | (tensor == 1)).all()):
            raise ValueError("keep mask must hold booleans or 0/1 values (True = keep)")
        tensor = tensor.bool()
    return tensor.detach().to("cpu")
