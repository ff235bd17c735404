"""The `norm` metric (Kobayashi et al. 2020, *Attention is Not Only a Weight*): how much a head writes."""
from __future__ import annotations

import torch

from ..core.progress import Progress, report
from ..model.forward import forward_logits, model_device, to_device
from ..model.intervene import capture_out_inputs, inference_view, masked
from ..model.layout import head_grid, present_heads
from .registry import Contributions
from .weights import o_heads


def norm_contributions(model, batches, keep=None, progress: Progress | None = None) -> Contributions:
    """Per example, mean over non-pad tokens of ||Σ_j α_ij v_j W_O,h||.

    The head's output Σ_j α_ij v_j is its slice of the output projection's input, so `capture_out_inputs`
    records that input x (B, T, H*dh) and ||x_h W_O,h||² = x_h G_h x_hᵀ with the Gram matrix
    G_h = W_O,h W_O,hᵀ (dh, dh).
    """
    n_layers, n_heads = head_grid(model)
    present = present_heads(model)
    grams = []
    for layer in range(n_layers):
        heads = o_heads(model, layer, len(present[layer])) if present[layer] else None
        grams.append(None if heads is None else heads.float() @ heads.float().transpose(1, 2))  # (H, dh, dh)
    parts = []
    with masked(model, keep), inference_view(model) as runner, capture_out_inputs(runner) as captured:
        for index, batch in enumerate(batches):
            for calls in captured:
                calls.clear()
            with torch.inference_mode():
                forward_logits(runner, to_device(batch, model_device(model)))
            size, length = batch["input_ids"].shape
            mask = batch.get("attention_mask", torch.ones(size, length)).float()  # (B, T)
            values = torch.full((size, n_layers, n_heads), float("nan"), dtype=torch.float64)
            for layer, calls in enumerate(captured):
                hp = len(present[layer])
                if hp == 0 or not calls:
                    continue
                x = calls[-1]
                heads = x.float().cpu().unflatten(-1, (hp, x.shape[-1] // hp))  # (B, T, H, dh)
                sq = torch.einsum("bthd,hde,bthe->bth", heads, grams[layer], heads).clamp(min=0)  # (B, T, H)
                mean = (sq.sqrt() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, H)
                values[:, layer, present[layer]] = mean.double()
            parts.append(values)
            report(progress, (index + 1) / len(batches), f"output norms: batch {index + 1}/{len(batches)}")
    values = torch.cat(parts)
    return Contributions(values, torch.ones(values.shape[0], dtype=torch.float64))
