"""Pruning curves: quality vs fraction of heads removed in a metric's order (one-shot or iterative), and the
same curve for random orders (the baseline every metric must beat)."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..core.errors import UserError
from ..core.progress import Progress, report, sub
from ..core.types import CURVE_MODES, CurveMode
from ..evaluation.live import LiveEvaluator
from ..model.layout import head_grid
from ..scoring.api import score_heads
from ..scoring.registry import METRICS
from ..scoring.weights import random_scores
from .iterative import iterative_scores
from .masks import least_important

CURVE_COLUMNS = ["metric", "mode", "fraction", "accuracy", "loss", "heads_kept"]


SCORING_PASSES = {"gradient": 2.2, "attention": 1.5, "forward": 1.0}  # one scoring pass in dense passes, by
# what the metric needs (bench/score_speed.py: gradient 2.11); weights and random need no pass


def ranking_cost(metric: str, heads: int, *, mode: CurveMode = "one-shot", step: float = 0.1, until: float = 1.0) -> float:
    """Expected cost of ranking `heads` heads by `metric`, in dense evaluation passes: one scoring pass, or one
    per `step` up to `until` (iterative); leave-one-out ablation costs about half a pass per head."""
    spec = METRICS.get(metric)
    once = 0.5 * heads if metric == "ablation" else SCORING_PASSES.get(spec.needs, 0.0) if spec else 1.0
    return once * (max(1, round(until / step)) if mode == "iterative" else 1)


def curve_cost(metric: str, heads: int, fractions: Sequence[float], *, mode: CurveMode = "one-shot",
               step: float = 0.1) -> float:
    """Expected cost of `prune_curve`, in dense passes: ranking, then about one pass per fraction."""
    return ranking_cost(metric, heads, mode=mode, step=step, until=max(fractions, default=0.0)) + len(fractions)


def _evaluator(model, batches, evaluator=None) -> LiveEvaluator:
    return evaluator if evaluator is not None else LiveEvaluator(model, batches)


def prune_curve(model, batches, metric: str, fractions: Sequence[float], *, mode: CurveMode = "one-shot",
                step: float = 0.1, scores: torch.Tensor | None = None, min_heads_per_layer: int = 1,
                stop_below: float | None = None, evaluator=None, progress: Progress | None = None) -> pd.DataFrame:
    """Accuracy and loss vs fraction of heads removed in the order of `metric` (`headprune.scoring.api.score_heads`).

    one-shot: score once (or use `scores`); iterative: follow `iterative_scores` with `step` (re-scoring under
    the mask after every `step` of the heads). `stop_below` (HF bertology's masking threshold): stop after the
    first fraction whose accuracy falls below `stop_below` × the dense accuracy. Returns DataFrame(metric, mode,
    fraction, accuracy, loss, heads_kept), fractions ascending. `evaluator` (a `LiveEvaluator` over `batches`)
    may be shared between curves.
    """
    if mode not in CURVE_MODES:
        raise UserError(f"mode must be 'one-shot' or 'iterative', got {mode!r}", option="mode")
    fractions = check_fractions(fractions)
    if stop_below is not None and not 0 <= stop_below <= 1:
        raise UserError(f"stop_below is a fraction of the dense accuracy in [0, 1], got {stop_below}",
                        option="stop_below")
    evaluator = _evaluator(model, batches, evaluator)
    layers, heads = head_grid(model)
    total = layers * heads
    cost = 0.0 if mode == "one-shot" and scores is not None else \
        ranking_cost(metric, total, mode=mode, step=step, until=max(fractions, default=0.0))
    ranking = cost / (cost + len(fractions))  # share of the progress bar for ranking: about linear in time
    ranked = sub(progress, 0.0, ranking)
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
        report(progress, ranking + (1 - ranking) * (i + 1) / len(fractions), f"{metric} {mode}: {fraction:.0%} removed")
        if stop_below is not None and result["accuracy"] < stop_below * evaluator.dense["accuracy"]:
            break
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def random_baseline(model, batches, fractions: Sequence[float], *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                    metric_key: str = "accuracy", min_heads_per_layer: int = 1, evaluator=None,
                    progress: Progress | None = None) -> pd.DataFrame:
    """`metric_key` vs fraction removed in random orders: DataFrame(fraction, mean, low, high) over `seeds`
    (low/high = min/max over the seeds)."""
    evaluator = _evaluator(model, batches, evaluator)
    grid = head_grid(model)
    total = grid[0] * grid[1]
    fractions = check_fractions(fractions)
    values = {f: [] for f in fractions}
    for s, seed in enumerate(seeds):
        scores = random_scores(grid, seed)
        for fraction in fractions:
            keep = least_important(scores, round(fraction * total), model=model, min_heads_per_layer=min_heads_per_layer)
            values[fraction].append(evaluator.evaluate(keep)[metric_key])
        report(progress, (s + 1) / len(seeds), f"random order, seed {seed}")
    rows = [{"fraction": f, "mean": sum(v) / len(v), "low": min(v), "high": max(v)} for f, v in values.items()]
    return pd.DataFrame(rows, columns=["fraction", "mean", "low", "high"])


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """Fractions of heads removed, sorted; each a finite number in [0, 1]."""
    try:
        out = sorted(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise UserError(f"fractions must be numbers in [0, 1], got {list(fractions)!r}", option="fractions") from None
    if not out or any(not 0 <= f <= 1 for f in out):  # NaN fails the comparison too
        raise UserError(f"fractions must be numbers in [0, 1], got {out}", option="fractions")
    return out
