"""Automatic masks and pruning curves on tiny models."""
from __future__ import annotations

import pytest
import torch

from headprune.core.errors import UserError
from headprune.evaluation.cost import flops_per_token
from headprune.evaluation.live import LiveEvaluator
from headprune.evaluation.loop import evaluate
from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.scoring.api import score_heads
from headprune.search.budget import budget_mask
from headprune.search.curves import prune_curve, random_baseline
from headprune.search.iterative import iterative_scores
from headprune.search.masks import least_important, uniform_least_important
from headprune.search.target import target_mask


def _scores(model, seed=0):
    return torch.rand(layout.head_grid(model), generator=torch.Generator().manual_seed(seed))


def test_least_important_removes_lowest_with_guardrails():
    scores = torch.tensor([[0.1, 0.2, 0.9], [0.3, 0.05, 0.8]])
    keep = least_important(scores, 2, min_heads_per_layer=0)
    assert keep.tolist() == [[False, True, True], [True, False, True]]
    keep = least_important(scores, 4, min_heads_per_layer=1)
    assert keep.sum(-1).tolist() == [1, 1]
    assert least_important(scores, 100, min_heads_per_layer=0).sum() == 0
    with pytest.raises(ValueError, match="needs the model"):
        least_important(scores, 1, unit_mode="kv-group")


def test_least_important_gqa_units():
    model = tiny_model("llama")  # 6 query heads in 2 KV groups of 3
    scores = _scores(model)
    keep = least_important(scores, 4, model=model, unit_mode="kv-group")
    grouped = keep.view(keep.shape[0], 2, 3)
    assert torch.all(grouped.all(-1) | ~grouped.any(-1))  # whole groups only
    assert (~keep).sum() >= 4 and keep.any(-1).all()
    keep = least_important(scores, 5, model=model, unit_mode="group-equal")
    for row in keep.view(keep.shape[0], 2, 3):
        counts = {int(c) for c in row.sum(-1) if c > 0}
        assert len(counts) == 1


def test_uniform_masks_keep_the_most_important_whole_groups_in_every_layer():
    model = tiny_model("llama")  # 3 layers, 6 query heads in 2 KV groups of 3
    scores = torch.tensor([[1.0, 1, 1, 0, 0, 0], [0, 0, 0, 5, 5, 5], [2, 0, 0, 0, 1, 0]])
    keep = uniform_least_important(scores, 3, model=model)
    assert keep.int().tolist() == [[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert torch.equal(uniform_least_important(scores, 6, model=model), torch.ones(3, 6, dtype=torch.bool))
    only_second = torch.ones(3, 6, dtype=torch.bool)
    only_second[0, 0] = False  # layer 0's first group is no longer whole: its second group stays
    assert uniform_least_important(scores, 3, model=model, keep=only_second)[0].int().tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(UserError, match="not runtime-safe") as caught:
        uniform_least_important(scores, 4, model=model)
    assert caught.value.option == "heads_per_layer"


def test_budget_never_violates_what_it_checked():
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]
    scores = _scores(model)
    for max_drop in (0.0, 0.05, 0.2):
        keep, info = budget_mask(model, batches, scores, max_drop=max_drop, metric_key="accuracy")
        val = evaluate(model, batches, keep)["accuracy"]
        assert val >= info["dense"] - max_drop - 1e-9
        assert info["val"] == pytest.approx(val)
        assert info["heads_removed"] == int((~keep).sum()) and keep.any(-1).all()
        assert info["steps"] > 0
    keep, info = budget_mask(model, batches, scores, max_drop=0.05, greedy=True)
    assert evaluate(model, batches, keep)["accuracy"] >= info["dense"] - 0.05 - 1e-9


@pytest.mark.parametrize("method", ["scales", "weights"])
def test_budget_with_recovery_holds_for_the_recovered_model(method):
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]
    calib = [tiny_batch(model, seed=10 + s, batch_size=8) for s in range(2)]
    keep, info = budget_mask(model, batches, _scores(model), max_drop=0.1, recover_batches=calib,
                             recover_method=method)
    recovery = info["recovery"]
    assert info["heads_removed"] > 0 and recovery.method == method and torch.equal(recovery.keep, keep)
    with recovery.applied(model):
        val = evaluate(model, batches)["accuracy"]
    assert val >= info["dense"] - 0.1 - 1e-9 and info["val"] == pytest.approx(val)


def test_target_mask_reaches_flops_ratio():
    model = tiny_model("gpt2")
    keep, info = target_mask(model, _scores(model), flops_ratio=0.8, seq_len=16)
    ratio = flops_per_token(model, keep, 16) / flops_per_token(model, None, 16)
    assert ratio <= 0.8 and info["flops_ratio"] == pytest.approx(ratio)
    with pytest.raises(ValueError, match="larger ratio"):
        target_mask(model, _scores(model), flops_ratio=0.01, seq_len=16)
    with pytest.raises(ValueError, match="exactly one"):
        target_mask(model, _scores(model))


def test_target_mask_by_latency_is_generous_for_a_loose_target():
    model = tiny_model("bert")
    keep, info = target_mask(model, _scores(model), latency_ms=1e6, seq_len=8, batch_size=1, repeats=1)
    assert info["heads_removed"] == 0 and keep.all()


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


def test_iterative_scores_follow_rescoring_rounds():
    model = tiny_model("bert")  # 3 x 4 heads; step 0.25 removes 3 heads a round
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    seen = []
    ranks = iterative_scores(model, batches, "gradient", step=0.25, until=0.5, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and 0 <= seen[0] and seen[-1] == 1.0  # one bar over all rounds
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    for _ in range(2):  # the loop by hand: score under the mask, drop the 3 lowest
        keep = least_important(score_heads(model, batches, "gradient", keep=keep), 3, model=model, keep=keep)
        n = int((~keep).sum())
        assert torch.equal(least_important(ranks, n, model=model), keep)
    assert sorted(ranks.flatten().tolist()) == list(range(12))
    with pytest.raises(ValueError, match="step"):
        iterative_scores(model, batches, "gradient", step=0)


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
