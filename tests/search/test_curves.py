"""Pruning curves (headprune.search.curves) on tiny models, and their expected cost for progress bars."""
from __future__ import annotations

import pytest
from helpers.masks import random_scores as _scores

from headprune.evaluation.live import LiveEvaluator
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.search.curves import (
    curve_cost,
    prune_curve,
    random_baseline,
    ranking_cost,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread of a shared machine


def test_curve_costs_weigh_ranking_against_evaluations():
    assert ranking_cost("magnitude", 72) == 0.0 and ranking_cost("gradient", 72) == pytest.approx(2.2)
    assert ranking_cost("gradient", 72, mode="iterative", step=0.1, until=0.5) == pytest.approx(11.0)
    assert ranking_cost("ablation", 72) == 36.0
    assert curve_cost("gradient", 72, [0.0, 0.5, 1.0]) == pytest.approx(5.2)


def test_curves_columns_and_fractions():
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    live = LiveEvaluator(model, batches)
    fractions = [0.5, 0.0, 0.25]
    one_shot = prune_curve(model, batches, "random", fractions, scores=_scores(model), evaluator=live)
    assert list(one_shot.columns) == ["metric", "mode", "fraction", "accuracy", "loss", "heads_kept"]
    assert one_shot["fraction"].is_monotonic_increasing and one_shot["heads_kept"].is_monotonic_decreasing
    assert one_shot["heads_kept"].tolist() == [12, 9, 6]
    assert one_shot["loss"].iloc[0] == pytest.approx(live.dense["loss"])
    seen = []
    iterative = prune_curve(model, batches, "magnitude", [0.25, 0.5], mode="iterative", step=0.1, evaluator=live,
                            progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert iterative["heads_kept"].tolist() == [9, 6] and set(iterative["mode"]) == {"iterative"}
    baseline = random_baseline(model, batches, [0.5, 0.25], seeds=(0, 1, 2), evaluator=live)
    assert list(baseline.columns) == ["fraction", "mean", "low", "high"]
    assert baseline["fraction"].tolist() == [0.25, 0.5]
    assert (baseline["low"] <= baseline["mean"]).all() and (baseline["mean"] <= baseline["high"]).all()
    with pytest.raises(ValueError, match="mode"):
        prune_curve(model, batches, "random", [0.1], mode="sideways", evaluator=live)


def test_curve_stops_below_threshold():
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s, batch_size=16) for s in range(2)]
    live = LiveEvaluator(model, batches)
    fractions = [0.0, 0.5, 0.9]
    full = prune_curve(model, batches, "random", fractions, scores=_scores(model), evaluator=live,
                       min_heads_per_layer=0)
    dense, half = live.dense["accuracy"], full["accuracy"].iloc[1]
    assert half < dense  # this fixture's half-pruned model is worse than dense
    stopped = prune_curve(model, batches, "random", fractions, scores=_scores(model), evaluator=live,
                          min_heads_per_layer=0, stop_below=(half + dense) / 2 / dense)
    assert stopped["fraction"].tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match="stop_below"):
        prune_curve(model, batches, "random", [0.1], stop_below=2.0, evaluator=live)
