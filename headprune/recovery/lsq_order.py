"""Which heads least squares can best make up for: a removal order from the normal equations of the output
projection fit (`lsq_recover`'s "weights" method, with its ridge), after Optimal Brain Surgeon for groups of
weights (Hassibi & Stork 1993; per structure, Kurtic et al. 2023, ZipLM).

Per layer, on calibration tokens of the model as given: G = AᵀA + λI, A = [context vectors (N, H·dh), 1]
(the intercept where the projection has a bias), and W = [W_O; b] (H·dh + 1, d). Removing head g's dh columns
and refitting the rest optimally raises the squared error of the projection's output by
ΔE_g = tr(W_gᵀ ((G⁻¹)_gg)⁻¹ W_g); after the removal W and G⁻¹ are updated in closed form
(W ← W − G⁻¹_{:,g} ((G⁻¹)_gg)⁻¹ W_g, G⁻¹ ← G⁻¹ − G⁻¹_{:,g} ((G⁻¹)_gg)⁻¹ G⁻¹_{g,:}), and the cheapest next head
is found the same way: a greedy order per layer whose running sum is the layer's refit error. Layers are compared by that error
relative to the energy of what the attention sub-block passes on, ‖x + W_O·ctx + b‖² (x: the block input), the
quantity a post-norm block then normalises, and merged greedily, cheapest next removal first.

On `minilm-tweets` (51 of 72 heads removed, at least one per layer, least squares with the feed-forward refit;
full validation / test splits, points vs dense): this order −0.69 / −0.76 on 2,048 training tweets and
−0.80 / −0.84 on 1,024, the `gradient` order −1.41 / −0.46 on 2,048 (a script). The two splits disagree by
about their sampling noise: read the mean.
"""
from __future__ import annotations

import torch

from ..core.progress import Progress, report
from ..model.adapters import in_out_weight
from ..model.forward import forward_backbone, model_device, real_tokens, to_device
from ..model.intervene import capture_out_inputs, layer_plan
from ..model.layout import head_dim, head_grid, out_projections, present_heads
from .lsq_fit import DEFAULT_DAMPING, ridge


def _layer_order(gram: torch.Tensor, weight: torch.Tensor, dh: int, intercept: bool) -> tuple[list[int], list[float]]:
    """Greedy OBS over the stored heads of one layer: (storage positions in removal order, error increments).
    gram: (H·dh + k, H·dh + k) float64, k = 1 intercept row last when `intercept`; weight: (H·dh + k, d)."""
    heads = (gram.shape[0] - int(intercept)) // dh
    if heads == 0:
        return [], []
    inverse = torch.linalg.inv(gram + ridge(gram, DEFAULT_DAMPING["weights"], free=int(intercept)))
    weight = weight.clone()
    alive, order, increments = list(range(heads)), [], []
    while alive:
        costs = []
        for h in alive:
            g = slice(h * dh, (h + 1) * dh)
            costs.append(float(torch.trace(weight[g].T @ torch.linalg.solve(inverse[g, g], weight[g]))))
        best = min(range(len(alive)), key=costs.__getitem__)
        h = alive.pop(best)
        g = slice(h * dh, (h + 1) * dh)
        solve = torch.linalg.inv(inverse[g, g])
        weight -= inverse[:, g] @ solve @ weight[g]
        inverse -= inverse[:, g] @ solve @ inverse[g, :]
        order.append(h)
        increments.append(max(costs[best], 0.0))
    return order, increments


@torch.no_grad()
def reconstruction_scores(model, calib_batches: list[dict], *, progress: Progress | None = None) -> torch.Tensor:
    """(L, H) float32 over original head ids, higher = more important: each head's place in the merged greedy
    order, as the summed relative refit error once it and every head before it are removed (non-decreasing
    along the order). NaN for heads the model no longer stores. One forward pass over
    `calib_batches` (no task head)."""
    batches = [to_device(b, model_device(model)) for b in calib_batches]
    projections = out_projections(model)
    grams: list = [None] * len(projections)
    energy = torch.zeros(len(projections), dtype=torch.float64)
    weights = []
    for proj in projections:
        w = in_out_weight(proj).detach().double().cpu()
        weights.append(w if proj.bias is None else torch.cat([w, proj.bias.detach().double().cpu()[None]]))
    for i, batch in enumerate(batches):
        record: list[torch.Tensor] = []
        with capture_out_inputs(model) as captured, layer_plan(model, 0, None, record):
            forward_backbone(model, batch)
        tokens = real_tokens(batch)
        for layer, proj in enumerate(projections):
            if not captured[layer]:  # a layer with no head left computes no attention
                continue
            a = captured[layer][0][tokens].double().cpu()
            if proj.bias is not None:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
            grams[layer] = a.T @ a if grams[layer] is None else grams[layer] + a.T @ a
            energy[layer] += float(((record[layer][tokens].double().cpu() + a @ weights[layer]) ** 2).sum())
        report(progress, 0.8 * (i + 1) / len(batches), f"calibration batch {i + 1}/{len(batches)}")
    queues = []
    for layer, gram in enumerate(grams):
        if gram is None:
            queues.append([])
            continue
        order, increments = _layer_order(gram, weights[layer], head_dim(model), projections[layer].bias is not None)
        present = present_heads(model)[layer]
        scale = float(energy[layer].clamp(min=1e-12))
        queues.append([(present[h], inc / scale) for h, inc in zip(order, increments)])
    scores = torch.full(head_grid(model), float("nan"))
    total = 0.0
    while any(queues):
        layer = min((q[0][1], layer) for layer, q in enumerate(queues) if q)[1]
        head, increment = queues[layer].pop(0)
        total += increment
        scores[layer, head] = total
    report(progress, 1.0, "removal order ready")
    return scores
