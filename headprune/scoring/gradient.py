"""Gate-gradient metrics: `gradient` (Michel et al. 2019) and `fisher` (Kwon et al. 2022) from one backward pass."""
from __future__ import annotations

import torch

from ..core.progress import Progress, report
from ..evaluation.metrics import per_example_loss
from ..model.forward import forward_logits, model_device, to_device
from ..model.intervene import gated, inference_view
from ..model.layout import task_of, to_keep_tensor
from .registry import Contributions


def gate_gradient_contributions(model, batches, keep=None, progress: Progress | None = None) -> dict[str, Contributions]:
    """`gradient` and `fisher` per example, from one backward pass per batch.

    A per-example gate tensor (L, B, H) set to `keep` and requiring grad multiplies every head's output
    (`headprune.model.intervene.gated`); the per-example losses are summed, so `torch.autograd.grad(sum, gates)`
    gives each example its own dL(x)/dξ_h, and no parameter gradient is computed.
    """
    keep = to_keep_tensor(keep, model)
    task, device = task_of(model), model_device(model)
    grads, weights = [], []
    with inference_view(model) as runner:
        for index, batch in enumerate(batches):
            batch = to_device(batch, device)
            size = int(batch["input_ids"].shape[0])
            gates = keep.float().to(device)[:, None, :].expand(-1, size, -1).contiguous().requires_grad_(True)  # (L, B, H)
            with torch.enable_grad(), gated(runner, gates):
                losses, count = per_example_loss(forward_logits(runner, batch), batch["labels"], task)
                (grad,) = torch.autograd.grad(losses.sum(), gates)
            grads.append(grad.detach().double().permute(1, 0, 2).cpu())  # (B, L, H)
            weights.append((count > 0).double().cpu())  # counts live where the logits do (a GPU)
            report(progress, (index + 1) / len(batches), f"gate gradients: batch {index + 1}/{len(batches)}")
    grad, weight = torch.cat(grads), torch.cat(weights)  # (N, L, H), (N,)
    return {"gradient": Contributions(grad.abs(), weight), "fisher": Contributions(grad.square(), weight, "sum")}
