"""Iterative pruning as a removal order (Michel et al. 2019; HF bertology): remove a step of the heads, re-score
under the mask, repeat — returned as a score map so that every function taking scores can follow it."""
from __future__ import annotations

import torch

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..core.types import UnitMode
from ..model.layout import head_grid
from ..scoring.api import score_heads
from .masks import least_important, removal_order


def iterative_scores(model, batches, metric: str, *, step: float = 0.1, until: float = 1.0,
                     min_heads_per_layer: int = 1, unit_mode: UnitMode = "head",
                     progress: Progress | None = None) -> torch.Tensor:
    """Removal order of iterative pruning as scores (L, H), float32: from the dense model, score `metric` under
    the current mask, remove the lowest-scored `step` of all heads, repeat until `until` of them are gone (or
    the guardrails allow no more). The k-th head removed scores k (0 first); heads never removed score above,
    in the order of their last scores. So `least_important(result, n)` is the mask after n heads of this
    sequence, and every function that takes scores (curves, budget and target masks) can follow it.
    Costs one `score_heads` per round.
    """
    if not 0 < step <= 1:
        raise UserError(f"step must be a fraction in (0, 1], got {step}", option="step")
    if not 0 <= until <= 1:
        raise UserError(f"until must be a fraction in [0, 1], got {until}", option="until")
    layers, heads = head_grid(model)
    total = layers * heads
    target, amount = round(until * total), max(1, round(step * total))
    keep = torch.ones(layers, heads, dtype=torch.bool)
    sequence: list[tuple[int, int]] = []
    rounds = max(1, -(-target // amount))  # score_heads calls when the guardrails never interfere

    def rescore() -> torch.Tensor:
        done = len(sequence)

        def within(fraction: float, message: str) -> None:  # this round's share of the whole
            report(progress, (min(done // amount, rounds - 1) + fraction) / rounds,
                   f"iterative {metric}, {done}/{target} heads removed: {message}")
        return score_heads(model, batches, metric, keep=keep, progress=within if progress is not None else None)

    current = rescore()
    while len(sequence) < target:
        smaller = least_important(current, min(amount, target - len(sequence)), model=model,
                                  min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode, keep=keep)
        if torch.equal(smaller, keep):  # guardrails allow no more
            break
        sequence += [(l, h) for l, h in removal_order(current) if keep[l, h] and not smaller[l, h]]
        keep = smaller
        if len(sequence) < target:
            current = rescore()
    report(progress, 1.0, f"iterative {metric}: {len(sequence)} heads ranked by removal")
    ranks = torch.empty(layers, heads)
    for rank, (layer, head) in enumerate(sequence + [(l, h) for l, h in removal_order(current) if keep[l, h]]):
        ranks[layer, head] = rank
    return ranks
