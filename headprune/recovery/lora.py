"""LoRA (Hu et al. 2021) through `peft`: low-rank updates of the blocks' linear layers instead of all weights,
for large decoders; merged into the weights at the end of a fine-tune."""
from __future__ import annotations

import torch

from ..model.adapters import adapter_for, linear_shape
from ..model.layout import blocks

LORA_ALPHA_PER_RANK = 2  # lora_alpha = 2 · r, the usual choice


def lora_targets(model: torch.nn.Module) -> list[str]:
    """Full names of the non-empty linear layers (nn.Linear / Conv1D) inside the Transformer blocks."""
    inside = {id(m) for block in blocks(model) for m in block.modules()}
    return [name for name, module in model.named_modules()
            if id(module) in inside and linear_shape(module) is not None and module.weight.numel() > 0]


def with_lora(model: torch.nn.Module, rank: int):
    """`model` wrapped by peft with LoRA adapters on `lora_targets`; a classifier's head is trained in full."""
    from peft import LoraConfig, get_peft_model

    adapter = adapter_for(model)
    head = [name for name in adapter.classifier_heads if hasattr(model, name)]
    config = LoraConfig(r=rank, lora_alpha=LORA_ALPHA_PER_RANK * rank, lora_dropout=0.0,
                        target_modules=lora_targets(model), modules_to_save=head or None,
                        fan_in_fan_out=adapter.conv1d)
    return get_peft_model(model, config)
