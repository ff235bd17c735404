"""search.compress_setup: what a compress run measures before it starts, and the time plan made from it."""
from __future__ import annotations

import pytest

from headprune.model.tiny import tiny_batch, tiny_model
from headprune.search.compress_plan import CompressData, CompressSettings, CostModel, Ladder
from headprune.search.compress_setup import RESERVE_MARGIN, SLICE_RANGE, make_plan, measure_costs

pytestmark = pytest.mark.usefixtures("one_thread")


def data_for(model):
    def batches(seed, n):
        return [tiny_batch(model, batch_size=8, seed=seed + i) for i in range(n)]

    return CompressData(judge=batches(100, 2), calib=batches(200, 1), train=batches(300, 4), test=batches(400, 2))


def test_a_step_is_timed_at_dense_size_and_at_the_top_of_the_ladder():
    model = tiny_model("bert")  # 2 layers × 4 heads (tiny_model's default)
    data, said = data_for(model), []
    settings = CompressSettings(target_heads=0.5)
    costs, dense_val = measure_costs(model, data, settings, Ladder(model, settings), said.append)
    assert 0 <= dense_val <= 1 and costs.forward_s > 0 and costs.copy_s > 0
    assert costs.step_s > 0 and costs.small_step_s > 0
    assert 0 < costs.small_ratio < 1  # the FLOP ratio of the ladder's top: half of the heads gone
    assert said[-1] == "timing a distillation step of the smallest model"
    least_squares = CompressSettings(distill=False)
    costs, _ = measure_costs(model, data, least_squares, Ladder(model, least_squares), said.append)
    assert costs.step_s == 0 and costs.small_step_s is None


def test_the_plan_keeps_the_final_tests_in_reserve_and_sizes_the_slices():
    costs = CostModel(forward_s=0.01, step_s=0.5)
    settings = CompressSettings(max_drop=1.0, time_budget=600, retraining_free_share=0.3)
    plan = make_plan(costs, 0.8, settings, spent=30.0, test_examples=1000)
    final = 3 * 1000 * 0.01
    assert plan["threshold"] == pytest.approx(0.79) and plan["dense_val"] == 0.8
    assert plan["budget_s"] == pytest.approx(600 - RESERVE_MARGIN * final)
    assert plan["deadline_s"] == pytest.approx(600 - final) and plan["deadline_s"] > plan["budget_s"]
    assert plan["slice_steps"] == round(0.1 * (plan["budget_s"] - 30) / 0.5)
    assert plan["least_squares_until"] == pytest.approx(30 + 0.3 * (plan["budget_s"] - 30))
    assert make_plan(costs, 0.8, CompressSettings(distill_steps=7), 30.0, 1000)["slice_steps"] == 7
    assert make_plan(costs, 0.8, CompressSettings(time_budget=40), 30.0, 10)["slice_steps"] == SLICE_RANGE[0]
    assert make_plan(CostModel(forward_s=0.01, step_s=0.0), 0.8, settings, 30.0, 10)["slice_steps"] == 0
    assert plan["costs"] == costs.to_dict()
