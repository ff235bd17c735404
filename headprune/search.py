"""Automatic masks and pruning curves over importance scores (higher score = more important head).

* `least_important`: remove the n lowest-scored heads, with guardrails (heads kept per layer, GQA units).
* `prune_curve`: metric vs fraction of heads removed; one-shot (score once) or iterative (Michel et al. 2019
  and HF bertology: remove `step` of the heads, re-score under the mask, repeat).
* `random_baseline`: the same curve for random orders over several seeds (mean and spread).
* `budget_mask`: the most heads removable in score order with the validation metric within `max_drop` of
  dense (binary search over the count, then a greedy pass over the remaining heads; every returned mask was
  evaluated and met the budget).
* `target_mask`: fewest heads removed in score order that reach an analytic FLOPs ratio, or a measured
  latency (coarse binary search with `headprune.cost.measure`), after Kwon et al. 2022's budgeted search.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from . import arch
from .units import to_units

Progress = Callable[[float, str], None]


def _order(scores: torch.Tensor) -> list[tuple[int, int]]:
    """Heads (layer, head) from least to most important; NaN (unscored / removed) last; ties by position."""
    flat = torch.as_tensor(scores, dtype=torch.float64).flatten()
    key = torch.where(torch.isnan(flat), torch.full_like(flat, float("inf")), flat)
    order = sorted(range(len(flat)), key=lambda i: (float(key[i]), i))
    heads = scores.shape[1]
    return [(i // heads, i % heads) for i in order]


def least_important(scores: torch.Tensor, n: int, *, model=None, min_heads_per_layer: int = 1,
                    unit_mode: str = "head", keep=None) -> torch.Tensor:
    """Keep mask (L, H) with the `n` least important heads removed (on top of `keep`, default all kept).

    Guardrails: every layer keeps at least `min_heads_per_layer` heads (heads skipped by this rule are passed
    over for the next in order). `unit_mode` ("head", "group-equal", "kv-group"; needs `model`) follows
    `headprune.units.to_units`: "kv-group" removes whole KV groups by their mean score until at least n
    heads are gone, "group-equal" evens out the kept heads per group afterwards, so the count can differ by
    a few heads.
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (num_layers, num_heads), got shape {tuple(scores.shape)}")
    layers, heads = scores.shape
    if model is not None and arch.head_grid(model) != (layers, heads):
        raise ValueError(f"scores are {layers}x{heads} but the model has {arch.head_grid(model)} heads")
    if unit_mode != "head" and model is None:
        raise ValueError(f"unit mode {unit_mode!r} needs the model (to know its KV groups)")
    keep = torch.ones(layers, heads, dtype=torch.bool) if keep is None else torch.as_tensor(keep).bool().clone()
    if n < 0:
        raise ValueError(f"n must be >= 0 heads to remove, got {n}")
    if unit_mode == "kv-group" and arch.kv_group_size(model) > 1:
        return _remove_groups(scores, n, model, min_heads_per_layer, keep)
    removed = 0
    for layer, head in _order(scores.masked_fill(~keep, float("nan"))):
        if removed >= n or not keep[layer, head]:
            break
        if int(keep[layer].sum()) <= min_heads_per_layer:
            continue
        keep[layer, head] = False
        removed += 1
    if unit_mode != "head":
        keep = to_units(keep, model, unit_mode, scores)
    return keep


def _remove_groups(scores, n, model, min_heads_per_layer, keep):
    size = arch.kv_group_size(model)
    layers, heads = scores.shape
    group_scores = scores.view(layers, heads // size, size).nanmean(-1)  # (L, G)
    grouped = keep.view(layers, heads // size, size)
    min_groups = -(-min_heads_per_layer // size)
    removed = 0
    for layer, group in _order(group_scores.masked_fill(~grouped.any(-1), float("nan"))):
        if removed >= n or not grouped[layer, group].any():
            break
        if int(grouped[layer].any(-1).sum()) <= min_groups:
            continue
        removed += int(grouped[layer, group].sum())
        grouped[layer, group] = False
    return grouped.reshape(layers, heads).clone()


def _evaluator(model, batches, evaluator=None):
    from .live import LiveEvaluator

    return evaluator if evaluator is not None else LiveEvaluator(model, batches)


def prune_curve(model, batches, metric: str, fractions: Sequence[float], *, mode: str = "one-shot",
                step: float = 0.1, scores: torch.Tensor | None = None, min_heads_per_layer: int = 1,
                evaluator=None, progress: Progress | None = None) -> pd.DataFrame:
    """Accuracy and loss vs fraction of heads removed in the order of `metric` (`headprune.score.score_heads`).

    one-shot: score once (or use `scores`), remove the lowest fraction. iterative: from the dense model,
    remove `step` of all heads at a time (the last step stops at the fraction), re-scoring under the current
    mask before each step. Returns DataFrame(metric, mode, fraction, accuracy, loss, heads_kept), fractions
    ascending. `evaluator` (a `LiveEvaluator` over `batches`) may be shared between curves.
    """
    from .score import score_heads

    if mode not in ("one-shot", "iterative"):
        raise ValueError(f"mode must be 'one-shot' or 'iterative', got {mode!r}")
    fractions = sorted(float(f) for f in fractions)
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError("fractions must lie in [0, 1]")
    if mode == "iterative" and not 0 < step <= 1:
        raise ValueError("step must be a fraction in (0, 1]")
    evaluator = _evaluator(model, batches, evaluator)
    layers, heads = arch.head_grid(model)
    total = layers * heads
    if mode == "one-shot" and scores is None:
        scores = score_heads(model, batches, metric)
    keep = torch.ones(layers, heads, dtype=torch.bool)
    rows = []
    for i, fraction in enumerate(fractions):
        target = round(fraction * total)
        if mode == "one-shot":
            keep = least_important(scores, target, model=model, min_heads_per_layer=min_heads_per_layer)
        else:
            while total - int(keep.sum()) < target:
                removed = total - int(keep.sum())
                amount = min(max(1, round(step * total)), target - removed)
                current = score_heads(model, batches, metric, keep=keep)
                smaller = least_important(current, amount, model=model, min_heads_per_layer=min_heads_per_layer,
                                          keep=keep)
                if torch.equal(smaller, keep):  # guardrails allow no more
                    break
                keep = smaller
        result = evaluator.evaluate(keep)
        rows.append({"metric": metric, "mode": mode, "fraction": fraction, "accuracy": result["accuracy"],
                     "loss": result["loss"], "heads_kept": int(keep.sum())})
        if progress is not None:
            progress((i + 1) / len(fractions), f"{metric} {mode}: {fraction:.0%} removed")
    return pd.DataFrame(rows, columns=["metric", "mode", "fraction", "accuracy", "loss", "heads_kept"])


def random_baseline(model, batches, fractions: Sequence[float], *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                    metric_key: str = "accuracy", min_heads_per_layer: int = 1, evaluator=None,
                    progress: Progress | None = None) -> pd.DataFrame:
    """`metric_key` vs fraction removed in random orders: DataFrame(fraction, mean, low, high) over `seeds`
    (low/high = min/max over the seeds)."""
    evaluator = _evaluator(model, batches, evaluator)
    grid = arch.head_grid(model)
    total = grid[0] * grid[1]
    fractions = sorted(float(f) for f in fractions)
    values = {f: [] for f in fractions}
    for s, seed in enumerate(seeds):
        scores = torch.rand(grid, generator=torch.Generator().manual_seed(int(seed)))
        for fraction in fractions:
            keep = least_important(scores, round(fraction * total), model=model, min_heads_per_layer=min_heads_per_layer)
            values[fraction].append(evaluator.evaluate(keep)[metric_key])
        if progress is not None:
            progress((s + 1) / len(seeds), f"random order, seed {seed}")
    rows = [{"fraction": f, "mean": sum(v) / len(v), "low": min(v), "high": max(v)} for f, v in values.items()]
    return pd.DataFrame(rows, columns=["fraction", "mean", "low", "high"])


def budget_mask(model, val_batches, scores: torch.Tensor, *, max_drop: float = 0.01, metric_key: str = "accuracy",
                min_heads_per_layer: int = 1, unit_mode: str = "head", greedy: bool = True, evaluator=None,
                progress: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """The largest set of heads found whose removal keeps `metric_key` (higher = better) on `val_batches`
    at least dense − `max_drop`.

    1. Binary search over n for `least_important(scores, n)` (the metric is not monotone in n, so this finds
       a good n, not necessarily the largest). 2. `greedy`: try removing each remaining head in score order
       on top, keeping it off when the budget still holds (Kwon et al. 2022 refine their mask the same way).
    The returned mask is always one that was evaluated and met the budget. info: heads_removed,
    fraction_removed, val (metric of the mask), dense, threshold, steps (evaluations).
    """
    evaluator = _evaluator(model, val_batches, evaluator)
    dense = evaluator.dense[metric_key]
    threshold = dense - max_drop
    grid = arch.head_grid(model)
    total = grid[0] * grid[1]
    steps = 0

    def check(keep):
        nonlocal steps
        steps += 1
        return evaluator.evaluate(keep)[metric_key]

    def mask_for(n):
        return least_important(scores, n, model=model, min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode)

    best, best_value = torch.ones(grid, dtype=torch.bool), dense
    low, high = 1, total
    while low <= high:  # invariant: `best` passed; every n tried above a failure may still pass (non-monotone)
        mid = (low + high) // 2
        keep = mask_for(mid)
        value = check(keep)
        if value >= threshold:
            if int(keep.sum()) < int(best.sum()):
                best, best_value = keep, value
            low = mid + 1
        else:
            high = mid - 1
        if progress is not None:
            progress(0.3 * min(1.0, steps / max(1, total.bit_length())), f"binary search: {mid} heads, {value:.4f}")
    if greedy:
        candidates = [(l, h) for l, h in _order(scores) if best[l, h]]
        for i, (layer, head) in enumerate(candidates):
            trial = best.clone()
            trial[layer, head] = False
            if int(trial[layer].sum()) < min_heads_per_layer:
                continue
            if unit_mode != "head":
                trial = to_units(trial, model, unit_mode, scores)
                if int(trial.sum()) >= int(best.sum()):
                    continue
            value = check(trial)
            if value >= threshold:
                best, best_value = trial, value
            if progress is not None:
                progress(0.3 + 0.7 * (i + 1) / len(candidates), f"greedy: {total - int(best.sum())} heads removed")
    evaluator.evaluate(best)
    removed = total - int(best.sum())
    return best, {"heads_removed": removed, "fraction_removed": removed / total, "val": best_value,
                  "dense": dense, "threshold": threshold, "metric_key": metric_key, "steps": steps}


def target_mask(model, scores: torch.Tensor, *, flops_ratio: float | None = None, latency_ms: float | None = None,
                min_heads_per_layer: int = 1, unit_mode: str = "head", seq_len: int = 128, batch_size: int = 8,
                repeats: int = 5, threads: int | None = None, progress: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """Fewest heads removed in score order so that the pruned model reaches a target.

    flops_ratio: analytic FLOPs per token (pruned / dense, `headprune.cost.flops_per_token` at `seq_len`)
    <= the ratio; a linear scan over n, exact and cheap. latency_ms: measured median latency of the
    physically pruned model (`headprune.cost.measure`, batch_size × seq_len, `repeats` runs) <= the target;
    a coarse binary search over n (about log2(L·H) measurements, each noisy: treat the result as approximate).
    Raises ValueError when no mask reaches the target. info: heads_removed, flops_ratio, latency_ms (if timed).
    """
    from .cost import flops_per_token, measure

    if (flops_ratio is None) == (latency_ms is None):
        raise ValueError("give exactly one target: flops_ratio or latency_ms")
    grid = arch.head_grid(model)
    total = grid[0] * grid[1]
    dense_flops = flops_per_token(model, None, seq_len)

    def mask_for(n):
        return least_important(scores, n, model=model, min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode)

    if flops_ratio is not None:
        for n in range(total + 1):
            keep = mask_for(n)
            ratio = flops_per_token(model, keep, seq_len) / dense_flops
            if ratio <= flops_ratio:
                return keep, {"heads_removed": total - int(keep.sum()), "flops_ratio": ratio}
        raise ValueError(f"no mask reaches {flops_ratio:.2f}× the FLOPs with these guardrails (heads are only part "
                         "of the FLOPs); choose a larger ratio")
    low, high, found = 0, total, None
    while low <= high:
        mid = (low + high) // 2
        keep = mask_for(mid)
        result = measure(model, keep, batch_size=batch_size, seq_len=seq_len, repeats=repeats, warmup=1, threads=threads)
        latency = result["pruned"]["latency_ms_median"]
        if latency <= latency_ms:
            found, high = (keep, latency, result["flop_ratio"]), mid - 1
        else:
            low = mid + 1
        if progress is not None:
            progress(min(1.0, (total - (high - low)) / total), f"{mid} heads removed: {latency:.1f} ms")
    if found is None:
        raise ValueError(f"no mask reaches {latency_ms} ms at batch {batch_size} × {seq_len} tokens; "
                         "choose a larger target")
    keep, latency, ratio = found
    return keep, {"heads_removed": total - int(keep.sum()), "latency_ms": latency, "flops_ratio": ratio}
