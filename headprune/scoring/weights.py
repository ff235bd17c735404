"""Metrics that need no data: weight `magnitude`, and the seeded `random` baseline (the one random order
every part of headprune draws: scores, curves' random baselines, the walkthrough's random half)."""
from __future__ import annotations

import torch

from ..model.adapters import adapter_for, in_out_weight
from ..model.layout import blocks, get_path, head_grid, out_projections, present_heads


def o_heads(model, layer: int, n_present: int) -> torch.Tensor:
    """Layer's output projection as (H_present, head_dim, D_out): head h's slice maps its output to the model."""
    weight = in_out_weight(out_projections(model)[layer]).detach()  # (H_present*dh, D_out)
    return weight.reshape(n_present, weight.shape[0] // n_present, weight.shape[1])


def magnitude_statistic(model) -> torch.Tensor:
    """Weight norm per head (L, H) float64, NaN for pruned heads; see METRICS["magnitude"]."""
    adapter = adapter_for(model)
    out = torch.full(head_grid(model), float("nan"), dtype=torch.float64)
    for layer, (block, heads) in enumerate(zip(blocks(model), present_heads(model))):
        hp = len(heads)
        if hp == 0:
            continue
        o = o_heads(model, layer, hp).double()  # (hp, dh, D)
        dh = o.shape[1]
        if adapter.fused_qkv:
            w = in_out_weight(get_path(block, adapter.fused_qkv)).detach().double().T  # (3*hp*dh, D)
            q, k, v = w.split(hp * dh)
        else:
            q, k, v = (get_path(block, p).weight.detach().double() for p in (adapter.q, adapter.k, adapter.v))
        q2 = q.reshape(hp, -1).square().sum(-1)  # (hp,)
        n_kv = k.shape[0] // dh
        kv2 = k.reshape(n_kv, -1).square().sum(-1) + v.reshape(n_kv, -1).square().sum(-1)  # (n_kv,)
        group = max(hp // n_kv, 1)
        slot = torch.arange(hp) // group
        out[layer, heads] = (q2 + kv2[slot] / group + o.reshape(hp, -1).square().sum(-1)).sqrt()
    return out


def random_scores(grid: tuple[int, int], seed: int) -> torch.Tensor:
    """Seeded uniform [0, 1) scores (L, H) float64: the random order (lowest first) used everywhere."""
    return torch.rand(grid, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)


def random_statistic(model, seed: int) -> torch.Tensor:
    """`random_scores` over `model`'s head grid."""
    return random_scores(head_grid(model), seed)
