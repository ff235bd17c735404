"""Running a model on a batch: devices, real tokens, logits without caches, the backbone alone."""
from __future__ import annotations

import torch
from torch import nn

from .adapters import adapter_for


def model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def model_inputs(model: nn.Module, batch: dict) -> dict:
    """What `model(**inputs)` takes from a batch: no labels (no loss computed), no KV cache for decoders."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if adapter_for(model).causal:
        inputs["use_cache"] = False
    return inputs


def real_tokens(batch: dict) -> torch.Tensor:
    """(B, T) bool, True at real (non-padding) tokens."""
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


def forward_logits(model: nn.Module, batch: dict, **kwargs) -> torch.Tensor:
    """Logits of one batch, without the model's own loss and without building a KV cache."""
    return model(**model_inputs(model, batch), **kwargs).logits


def forward_backbone(model: nn.Module, batch: dict) -> None:
    """Run only the backbone (`model.base_model`: embeddings and blocks, no task head) on one batch, for
    what hooks and layer plans record; a language model's vocabulary projection can cost more than a block."""
    model.base_model(**model_inputs(model, batch))
