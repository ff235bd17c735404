"""search.compress_plan: settings checks, data counts, the cost model, the Stopwatch, the size ladder, the report."""
from __future__ import annotations

import json
import types

import pytest
import torch

from headprune.core.errors import UserError
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.search import compress_plan
from headprune.search.compress_plan import (
    FFN_PASSES,
    LSQ_PASSES,
    RESCORE_METRICS,
    SCORE_PASSES,
    CompressData,
    CompressResult,
    CompressSettings,
    CostModel,
    Ladder,
    Stopwatch,
)


@pytest.mark.parametrize("option, value, match", [
    ("max_drop", True, "quality budget"), ("step_fraction", 0, r"step_fraction must lie in \(0, 1\]"),
    ("step_fraction", 1.01, "step_fraction"), ("polish_steps", -1, "polish_steps must be ≥ 0"),
    ("polish_steps", 2.0, "polish_steps"), ("retraining_free_share", 0.0, "retraining_free_share"),
    ("lr", 0, "learning rate"), ("temperature", float("nan"), "temperature"), ("alpha", 1.5, r"alpha must lie in \[0, 1\]"),
    ("lsq_method", "bias", "lsq_method must be one of"), ("lsq_target", "far", "lsq_target must be one of"),
    ("target_heads", "half", "fraction of all heads"), ("distil_step_fraction", 0.0, "distil_step_fraction"),
    ("distil_step_fraction", 1.5, "distil_step_fraction"), ("max_slices", 0, "max_slices"),
    ("max_slices", None, "max_slices"), ("max_slices", 2.0, "max_slices"),
])
def test_each_bad_setting_is_named(option, value, match):
    CompressSettings().check()
    with pytest.raises(UserError, match=match) as caught:
        CompressSettings(**{option: value}).check()
    assert caught.value.option == option


def test_edge_values_that_are_allowed():
    CompressSettings(max_drop=0, target_heads=1, step_fraction=1, polish_steps=0, alpha=0, distill_steps=None,
                     unit="uniform", metric="magnitude", lsq_method="scales", lsq_target="dense").check()


def test_data_counts_and_what_a_run_needs():
    model = tiny_model("bert", num_hidden_layers=1)
    four, two = tiny_batch(model, batch_size=4), tiny_batch(model, batch_size=2)
    data = CompressData(judge=[four, two], calib=[two], train=[], test=[four])
    assert data.count("judge") == 6 and data.count("calib") == 2 and data.count("train") == 0
    data.check(distill=False)  # least squares only: no training examples needed
    with pytest.raises(UserError, match="compress needs train examples; none were given") as caught:
        data.check(distill=True)
    assert caught.value.option == "train_examples"


def test_cost_model_arithmetic():
    costs = CostModel(forward_s=0.01, step_s=0.2, copy_s=0.5)
    assert costs.evaluate(100) == pytest.approx(1.0) and costs.evaluate(100, 0.5) == pytest.approx(0.5)
    assert costs.score(100, 0.5, "fisher") == pytest.approx(SCORE_PASSES["fisher"] * 0.5)
    assert costs.score(100, 1.0, "magnitude") == 0.0
    assert costs.refit(10, 1.0) == pytest.approx(LSQ_PASSES * 0.1)
    assert costs.refit(10, 1.0, feed_forward=True) == pytest.approx((LSQ_PASSES + FFN_PASSES) * 0.1)
    assert costs.score(100, 1.0, "reconstruction") == pytest.approx(SCORE_PASSES["reconstruction"] * 1.0)
    assert costs.distil(8, 1.0) == pytest.approx(8 * 0.2) and costs.distil(8, 0.0) == pytest.approx(8 * 0.2 / 4)
    assert costs.copies(3, 0.5) == pytest.approx(0.75)
    assert costs.to_dict() == {"forward_s": 0.01, "step_s": 0.2, "copy_s": 0.5, "small_step_s": None,
                               "small_ratio": 0.0}
    probed = CostModel(forward_s=0.01, step_s=0.2, small_step_s=0.15, small_ratio=0.6)  # two probes: a line
    assert probed.distil(10, 1.0) == pytest.approx(2.0) and probed.distil(10, 0.6) == pytest.approx(1.5)
    assert probed.distil(10, 0.8) == pytest.approx(1.75) and probed.distil(10, 0.0) == pytest.approx(0.75)
    assert probed.distil(10, 0.6) > costs.distil(10, 0.6)  # more than the FLOP share alone promises
    noisy = CostModel(forward_s=0.01, step_s=0.2, small_step_s=0.3, small_ratio=0.5)  # the small probe came out slower
    assert noisy.distil(10, 0.5) == pytest.approx(2.0) and noisy.distil(10, 0.9) == pytest.approx(2.0)


def test_auto_ranks_by_reconstruction_for_least_squares_and_by_gradient_for_distillation():
    assert compress_plan.phase_metric("auto", "least-squares") == "reconstruction"
    assert compress_plan.phase_metric("auto", "distil") == compress_plan.phase_metric("auto", "polish") == "gradient"
    assert all(compress_plan.phase_metric(m, p) == m for m in ("gradient", "fisher", "magnitude", "reconstruction")
               for p in ("least-squares", "distil"))
    assert CompressSettings().metric == "auto" and set(SCORE_PASSES) == set(RESCORE_METRICS) - {"auto"}


def test_a_failing_candidate_continues_while_it_improves_fast_enough():
    worth = compress_plan.worth_another_slice
    assert worth([0.70], 0.80, 1) and not worth([0.70], 0.80, 0)  # one judgement: no pace yet; no slice left
    assert worth([0.70, 0.74], 0.80, 2) and not worth([0.70, 0.74], 0.80, 1)  # +0.04 a slice: two more needed
    assert not worth([0.74, 0.72], 0.80, 5)  # worse after a slice
    assert worth([0.70, 0.76, 0.75], 0.80, 5)  # a dip within the patience, still on pace
    assert not worth([0.70, 0.76, 0.75, 0.755], 0.80, 5)  # no new best in the last two slices
    assert not worth([0.10, 0.12, 0.14], 0.80, 6)  # improving, but hopelessly slowly


def test_stopwatch_skips_the_first_unit(monkeypatch):
    clock = iter([100.0, 110.0, 111.0, 113.0])
    monkeypatch.setattr(compress_plan, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    watch = Stopwatch()  # began at 100
    for _ in range(3):
        watch(0.5)
    units = [{"input_ids": torch.zeros(n, 2)} for n in (4, 8, 8)]
    assert watch.per_item(units) == pytest.approx((113 - 110) / 16)  # the 4 warm-up examples are left out
    assert watch.per_item([None] * 3) == pytest.approx(3 / 2)  # units without a batch count 1 each
    assert watch.per_item(units[:2]) == pytest.approx((113 - 100) / 12)  # count mismatch: since the start
    clock = iter([5.0])
    assert Stopwatch().per_item(units) == 0.0  # nothing measured yet


def test_ladder_levels_per_unit():
    bert, llama = tiny_model("bert"), tiny_model("llama")  # 3x4 heads; 3x6 heads in KV groups of 3
    assert Ladder(bert, CompressSettings()).removed == list(range(10))  # one head per layer stays
    assert Ladder(bert, CompressSettings(min_heads_per_layer=0)).removed == list(range(13))
    assert Ladder(bert, CompressSettings(target_heads=0.5)).removed == list(range(7))  # stops at 6 of 12
    assert Ladder(bert, CompressSettings(target_heads=0.45)).removed == list(range(7))  # 5.4 rounds up
    assert Ladder(llama, CompressSettings(unit="kv-group")).removed == [0, 3, 6, 9]  # 1 head kept = 1 group kept
    uniform = Ladder(bert, CompressSettings(unit="uniform"))
    assert uniform.per_layer == [4, 3, 2, 1] and uniform.removed == [0, 3, 6, 9]
    with pytest.raises(UserError, match="from 0 to 4") as caught:
        Ladder(bert, CompressSettings(min_heads_per_layer=5))
    assert caught.value.option == "min_heads_per_layer"


def test_ladder_masks_drop_the_least_important_heads_on_top_of_keep():
    model = tiny_model("bert")
    ladder = Ladder(model, CompressSettings())
    scores = torch.arange(12, dtype=torch.float32).view(3, 4).flip(0)  # layer 2 holds the lowest scores
    keep = torch.ones(3, 4, dtype=torch.bool)
    assert ladder.level(keep) == 0
    keep = ladder.mask(2, scores, keep)
    assert (~keep).nonzero().tolist() == [[2, 0], [2, 1]] and ladder.level(keep) == 2
    keep = ladder.mask(4, scores, keep)  # two more: (2, 2), then (2, 3) must stay (last head), so (1, 0)
    assert (~keep).nonzero().tolist() == [[1, 0], [2, 0], [2, 1], [2, 2]] and ladder.level(keep) == 4
    keep = ladder.mask(9, scores, keep)  # as far as it goes: one head per layer, the best one
    assert keep.nonzero().tolist() == [[0, 3], [1, 3], [2, 3]] and ladder.level(keep) == 9
    uniform = Ladder(model, CompressSettings(unit="uniform"))
    assert uniform.mask(2, scores, torch.ones(3, 4, dtype=torch.bool)).nonzero()[:, 1].tolist() == [2, 3] * 3


def test_the_report_is_flat_json():
    keep = torch.tensor([[True, False, True], [False, False, True]])
    rf = {"keep": torch.ones(2, 3, dtype=torch.bool), "heads_removed": 0, "heads_removed_frac": 0.0, "val": 0.8,
          "test": 0.75, "stopped_by": "budget"}
    result = CompressResult(keep=keep, heads_total=6, heads_removed=3, heads_removed_frac=0.5, metric_key="accuracy",
                            max_drop=1.0, dense_val=0.9, val=0.85, threshold=0.89, dense_test=0.8, test=0.7,
                            retraining_free=rf, trajectory=[], stopped_by="target", seconds=1.5, distill_steps=4,
                            plan={}, examples={"judge": 8})
    report = result.report()
    assert not {"keep", "retraining_free", "val", "test", "dense_val", "dense_test"} & set(report)
    assert report["kept_heads"] == [[0, 2], [2]] and report["retraining_free_kept_heads"] == [[0, 1, 2]] * 2
    assert report["heads_kept"] == 3 and report["compressed_val_acc"] == 0.85 and report["dense_val_acc"] == 0.9
    assert report["compressed_test_acc"] == 0.7 and report["dense_test_acc"] == 0.8
    assert report["retraining_free_test_acc"] == 0.75 and report["retraining_free_stopped_by"] == "budget"
    assert report["stopped_by"] == "target" and report["examples"] == {"judge": 8} and report["resumed"] is False
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    nan = result.replace(val=float("nan"), test=float("inf"), retraining_free={**rf, "test": float("nan")}).report()
    assert (nan["compressed_val_acc"], nan["compressed_test_acc"], nan["retraining_free_test_acc"]) == (None, "inf", None)
    json.dumps(nan, allow_nan=False)  # valid JSON


def test_the_distillation_probe_times_batches_of_typical_size_not_the_longest(tmp_path):
    """Batches come sorted longest first: a probe on the first three timed 4 s a step on `minilm-tweets` where the
    run then took about 1 s, and cut every distillation slice to a quarter."""
    import pandas as pd
    from helpers.tiny import WORDS, bert_tokenizer

    from headprune.sources.batches import make_batches

    tokenizer = bert_tokenizer(tmp_path)
    lengths = [40, 36, 30] + [8] * 20 + [3] * 9
    df = pd.DataFrame({"text": [" ".join(WORDS[i % len(WORDS)] for i in range(n)) for n in lengths], "label": 0})
    batches = make_batches(tokenizer, df, "classification", batch_size=2, max_length=64)
    sizes = [int(b["input_ids"].numel()) for b in batches]
    assert sizes[0] == max(sizes)  # the longest batch comes first
    picked = compress_plan.typical_batches(batches)
    mean = sum(sizes) / len(sizes)
    picked_sizes = [int(b["input_ids"].numel()) for b in picked]
    assert len(picked) == 3 and all(b is not batches[0] for b in picked)
    assert sorted(abs(s - mean) for s in picked_sizes) == sorted(abs(s - mean) for s in sizes)[:3]
    assert [id(b) for b in compress_plan.typical_batches(batches[:2])] == [id(b) for b in batches[:2]]
