"""The `ablation` metric: exact leave-one-out loss increase of every head, through the layer-prefix cache."""
from __future__ import annotations

import torch

from ..core.progress import Progress, report
from ..evaluation.metrics import accumulate, batch_metrics, finalise
from ..evaluation.prefix import PrefixCache
from ..model.forward import model_device, to_device
from ..model.intervene import inference_view
from ..model.layout import task_of, to_keep_tensor
from .registry import Contributions, scored_heads


def _row_sums(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss sums and item counts (B,), each row through `evaluate.batch_metrics`."""
    parts = [batch_metrics(logits[i:i + 1], labels[i:i + 1], task) for i in range(labels.shape[0])]
    return (torch.tensor([p["loss_sum"] for p in parts], dtype=torch.float64),
            torch.tensor([p["count"] for p in parts], dtype=torch.float64))


def ablation_statistic(model, batches, keep=None, progress: Progress | None = None, *, per_example: bool = False):
    """Exact leave-one-out loss increase per head (L, H) float64, NaN for unscored heads.

    A `PrefixCache` holds every layer's input and attention-core output under `keep`; masking head (l, h)
    re-runs only layers >= l, and within layer l only what follows the attention probabilities (the cache
    replays them). The loss arithmetic is `headprune.evaluation.metrics`, so each entry equals
    `evaluate(model, batches, keep without h)["loss"] - evaluate(model, batches, keep)["loss"]`.
    With `per_example=True` returns `Contributions` instead (per-example loss-sum differences, weights =
    items per example), for the bootstrap.
    """
    keep = to_keep_tensor(keep, model)
    scored = scored_heads(model, keep)
    task, device = task_of(model), model_device(model)
    batches = [to_device(b, device) for b in batches]
    with inference_view(model) as runner:
        cache = PrefixCache(runner, batches, keep, contexts=True)
        labels = [b["labels"] for b in batches]
        if per_example:
            dense = [_row_sums(logits, y, task) for logits, y in zip(cache.logits, labels)]
            weights = torch.cat([count for _, count in dense])
            values = torch.full((len(weights), *keep.shape), float("nan"), dtype=torch.float64)
        else:
            total = None
            for logits, y in zip(cache.logits, labels):
                total = accumulate(total, batch_metrics(logits, y, task))
            dense_loss = finalise(total)["loss"]
            values = torch.full(keep.shape, float("nan"), dtype=torch.float64)
        heads = scored.nonzero().tolist()
        for step, (layer, head) in enumerate(heads):
            without = keep.clone()
            without[layer, head] = False
            if per_example:
                rows = [_row_sums(cache.logits_for(i, without, layer), y, task)[0] - dense[i][0]
                        for i, y in enumerate(labels)]
                values[:, layer, head] = torch.cat(rows)
            else:
                total = None
                for i, y in enumerate(labels):
                    total = accumulate(total, batch_metrics(cache.logits_for(i, without, layer), y, task))
                values[layer, head] = finalise(total)["loss"] - dense_loss
            report(progress, (step + 1) / len(heads), f"ablation: head {step + 1}/{len(heads)}")
    return Contributions(values, weights) if per_example else values

