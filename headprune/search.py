"""Automatic masks and pruning curves over importance scores (higher score = more important head).

* `least_important`: remove the n lowest-scored heads, with guardrails (heads kept per layer, GQA units).
* `iterative_scores`: the removal order of iterative pruning (Michel et al. 2019 and HF bertology: remove
  `step` of the heads, re-score under the mask, repeat) as a score map, so that every function taking scores
  follows it.
* `prune_curve`: metric vs fraction of heads removed; one-shot (score once) or iterative, with an optional
  stop threshold.
* `random_baseline`: the same curve for random orders over several seeds (mean and spread).
* `budget_mask`: the most heads removable in score order with the validation metric within `max_drop` of
  dense (binary search over the count, optionally a greedy pass over the remaining heads and least-squares
  recovery inside every check; every returned mask was evaluated and met the budget).
* `target_mask`: fewest heads removed in score order that reach an analytic FLOPs ratio, or a measured
  latency (coarse binary search with `headprune.cost.measure`), after Kwon et al. 2022's budgeted search.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from . import arch
from .evaluate import evaluate
from .recover import lsq_recover
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


def iterative_scores(model, batches, metric: str, *, step: float = 0.1, until: float = 1.0,
                     min_heads_per_layer: int = 1, unit_mode: str = "head", progress: Progress | None = None) -> torch.Tensor:
    """Removal order of iterative pruning as scores (L, H), float32: from the dense model, score `metric` under
    the current mask, remove the lowest-scored `step` of all heads, repeat until `until` of them are gone (or
    the guardrails allow no more). The k-th head removed scores k (0 first); heads never removed score above,
    in the order of their last scores. So `least_important(result, n)` is the mask after n heads of this
    sequence, and every function that takes scores (curves, budget and target masks) can follow it.
    Costs one `score_heads` per round.
    """
    from .score import score_heads

    if not 0 < step <= 1:
        raise ValueError("step must be a fraction in (0, 1]")
    if not 0 <= until <= 1:
        raise ValueError("until must be a fraction in [0, 1]")
    layers, heads = arch.head_grid(model)
    total = layers * heads
    target, amount = round(until * total), max(1, round(step * total))
    keep = torch.ones(layers, heads, dtype=torch.bool)
    sequence: list[tuple[int, int]] = []
    rounds = max(1, -(-target // amount))  # score_heads calls when the guardrails never interfere

    def rescore() -> torch.Tensor:
        done = len(sequence)

        def within(fraction: float, message: str) -> None:  # this round's share of the whole
            if progress is not None:
                progress(min(1.0, (min(done // amount, rounds - 1) + fraction) / rounds),
                         f"iterative {metric}, {done}/{target} heads removed: {message}")
        return score_heads(model, batches, metric, keep=keep, progress=within)

    current = rescore()
    while len(sequence) < target:
        smaller = least_important(current, min(amount, target - len(sequence)), model=model,
                                  min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode, keep=keep)
        if torch.equal(smaller, keep):  # guardrails allow no more
            break
        sequence += [(l, h) for l, h in _order(current) if keep[l, h] and not smaller[l, h]]
        keep = smaller
        if len(sequence) < target:
            current = rescore()
    if progress is not None:
        progress(1.0, f"iterative {metric}: {len(sequence)} heads ranked by removal")
    ranks = torch.empty(layers, heads)
    for rank, (layer, head) in enumerate(sequence + [(l, h) for l, h in _order(current) if keep[l, h]]):
        ranks[layer, head] = rank
    return ranks


def prune_curve(model, batches, metric: str, fractions: Sequence[float], *, mode: str = "one-shot",
                step: float = 0.1, scores: torch.Tensor | None = None, min_heads_per_layer: int = 1,
                stop_below: float | None = None, evaluator=None, progress: Progress | None = None) -> pd.DataFrame:
    """Accuracy and loss vs fraction of heads removed in the order of `metric` (`headprune.score.score_heads`).

    one-shot: score once (or use `scores`); iterative: follow `iterative_scores` with `step` (re-scoring under
    the mask after every `step` of the heads). `stop_below` (HF bertology's masking threshold): stop after the
    first fraction whose accuracy falls below `stop_below` × the dense accuracy. Returns DataFrame(metric, mode,
    fraction, accuracy, loss, heads_kept), fractions ascending. `evaluator` (a `LiveEvaluator` over `batches`)
    may be shared between curves.
    """
    from .score import score_heads

    if mode not in ("one-shot", "iterative"):
        raise ValueError(f"mode must be 'one-shot' or 'iterative', got {mode!r}")
    fractions = sorted(float(f) for f in fractions)
    if any(not 0 <= f <= 1 for f in fractions):
        raise ValueError("fractions must lie in [0, 1]")
    if stop_below is not None and not 0 <= stop_below <= 1:
        raise ValueError(f"stop_below is a fraction of the dense accuracy in [0, 1], got {stop_below}")
    evaluator = _evaluator(model, batches, evaluator)
    layers, heads = arch.head_grid(model)
    total = layers * heads
    ranking = 0.5 if mode == "iterative" or scores is None else 0.0  # share of the progress bar for ranking

    def ranked(fraction: float, message: str) -> None:
        if progress is not None:
            progress(ranking * fraction, message)
    if mode == "iterative":
        scores = iterative_scores(model, batches, metric, step=step, until=max(fractions, default=0.0),
                                  min_heads_per_layer=min_heads_per_layer, progress=ranked)
    elif scores is None:
        scores = score_heads(model, batches, metric, progress=ranked)
    rows = []
    for i, fraction in enumerate(fractions):
        keep = least_important(scores, round(fraction * total), model=model, min_heads_per_layer=min_heads_per_layer)
        result = evaluator.evaluate(keep)
        rows.append({"metric": metric, "mode": mode, "fraction": fraction, "accuracy": result["accuracy"],
                     "loss": result["loss"], "heads_kept": int(keep.sum())})
        if progress is not None:
            progress(ranking + (1 - ranking) * (i + 1) / len(fractions), f"{metric} {mode}: {fraction:.0%} removed")
        if stop_below is not None and result["accuracy"] < stop_below * evaluator.dense["accuracy"]:
            break
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
                min_heads_per_layer: int = 1, unit_mode: str = "head", greedy: bool = False,
                recover_batches: list[dict] | None = None, recover_method: str = "weights",
                recover_target: str = "auto", evaluator=None,
                progress: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """The largest set of heads found whose removal keeps `metric_key` (higher = better) on `val_batches`
    at least dense − `max_drop`.

    1. Binary search over n for `least_important(scores, n)` (the metric is not monotone in n, so this finds
       a good n, not necessarily the largest). 2. `greedy`: try removing each remaining head in score order
       on top, keeping it off when the budget still holds (Kwon et al. 2022 refine their mask the same way).
       Greedy makes many accept/reject decisions on the same data, so it overfits a small validation set:
       on minilm-tweets with 512 validation tweets it reached 64% of heads within budget but lost 3.7 test
       points. Use it with thousands of validation examples.
    `recover_batches`: judge every candidate after retraining-free least-squares recovery
    (`headprune.recover.lsq_recover` with `recover_method` and `recover_target`, calibrated on these batches; keep them apart from
    `val_batches`), so the budget holds for the recovered model; info["recovery"] then holds it (evaluate
    with `recovery.applied(model)`). Each candidate is then a full evaluation and `evaluator` is not used.
    The returned mask is always one that was evaluated and met the budget. info: heads_removed,
    fraction_removed, val (metric of the mask), dense, threshold, steps (evaluations), recovery (or None).
    """
    if recover_batches is None:  # masks only: the live evaluator re-runs just the changed layers
        evaluator = _evaluator(model, val_batches, evaluator)
        dense = evaluator.dense[metric_key]
    else:  # every candidate gets new output projections in every layer: plain evaluations, no cache to build
        dense = evaluate(model, val_batches)[metric_key]
    threshold = dense - max_drop
    grid = arch.head_grid(model)
    total = grid[0] * grid[1]
    steps = 0

    def check(keep):
        nonlocal steps
        steps += 1
        if recover_batches is None:
            return evaluator.evaluate(keep)[metric_key], None
        recovery = lsq_recover(model, keep, recover_batches, method=recover_method, target=recover_target)
        with recovery.applied(model):
            return evaluate(model, val_batches)[metric_key], recovery

    def mask_for(n):
        return least_important(scores, n, model=model, min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode)

    best, best_value, best_recovery = torch.ones(grid, dtype=torch.bool), dense, None
    low, high = 1, total
    while low <= high:  # invariant: `best` passed; every n tried above a failure may still pass (non-monotone)
        mid = (low + high) // 2
        keep = mask_for(mid)
        value, recovery = check(keep)
        if value >= threshold:
            if int(keep.sum()) < int(best.sum()):
                best, best_value, best_recovery = keep, value, recovery
            low = mid + 1
        else:
            high = mid - 1
        if progress is not None:
            progress((0.3 if greedy else 1.0) * min(1.0, steps / max(1, total.bit_length())),
                     f"binary search: {mid} heads, {value:.4f}")
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
            value, recovery = check(trial)
            if value >= threshold:
                best, best_value, best_recovery = trial, value, recovery
            if progress is not None:
                progress(0.3 + 0.7 * (i + 1) / len(candidates), f"greedy: {total - int(best.sum())} heads removed")
    removed = total - int(best.sum())
    return best, {"heads_removed": removed, "fraction_removed": removed / total, "val": best_value,
                  "dense": dense, "threshold": threshold, "metric_key": metric_key, "steps": steps,
                  "recovery": best_recovery}


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
