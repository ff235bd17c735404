"""Compress to a target: the loop keeps the budget on what it checks, rolls back, resumes exactly, stops on time."""
from __future__ import annotations

import json
import math

import pytest
import torch

from headprune.core.errors import UserError
from headprune.core.outputs import CHECKPOINTS
from headprune.evaluation.loop import evaluate
from headprune.model.layout import kept_mask
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lsq import lsq_recover
from headprune.recovery.lsq_order import reconstruction_scores
from headprune.scoring.api import score_heads
from headprune.search.compress import compress
from headprune.search.compress_plan import CompressData
from headprune.search.compress_state import STATE_FILE, as_tensor

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = dict(distill_steps=3, polish_steps=4, time_budget=600)  # step counts fixed: decisions depend on no clock


def setup(family="bert"):
    model = tiny_model(family)

    def batches(seed, n):
        return [tiny_batch(model, batch_size=8, seed=seed + i) for i in range(n)]

    return model, CompressData(judge=batches(100, 4), calib=batches(200, 2), train=batches(300, 6),
                               test=batches(400, 4))


def without_time(result):
    return [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")} for row in result.trajectory]


def test_every_accepted_step_meets_the_budget_and_a_failed_step_is_rolled_back():
    dense, data = setup()
    model, result = compress(dense, data, max_drop=2.0, **FAST)
    rows = result.trajectory
    assert {r.phase for r in rows} == {"least-squares", "distil", "polish"}
    assert all((r.val >= result.threshold) == r.accepted for r in rows)
    assert any(not r.accepted for r in rows), "a step that breaks the budget is part of this scenario"
    for before, after in zip(rows, rows[1:]):  # after a roll-back the next try in the phase is smaller
        if not before.accepted and after.phase == before.phase:
            assert after.heads_removed < before.heads_removed
    last = [r for r in rows if r.accepted][-1]
    assert result.heads_removed == last.heads_removed and torch.equal(kept_mask(model), result.keep)
    assert result.threshold == pytest.approx(result.dense_val - 0.02)
    distil = [r for r in rows if r.phase == "distil"]
    assert distil[0].heads_removed == max(r.heads_removed for r in rows), "the first distillation step is the top"
    assert any(len(r.slice_vals) > 1 for r in distil), "a candidate that missed once got another slice"
    for r in distil:  # judged after every slice; continued only while it missed the budget
        assert r.val == r.slice_vals[-1] and r.distill_steps == FAST["distill_steps"] * len(r.slice_vals)
        assert all(v < result.threshold for v in r.slice_vals[:-1])
    assert evaluate(model, data.judge)["accuracy"] == pytest.approx(result.val)  # the model it judged
    assert evaluate(model, data.test)["accuracy"] == pytest.approx(result.test)
    assert evaluate(dense, data.test)["accuracy"] == pytest.approx(result.dense_test)
    free = result.retraining_free
    assert free["val"] >= result.threshold and free["heads_removed"] <= result.heads_removed
    assert free["test"] is not None and last.test == result.test
    assert result.distill_steps == sum(r.distill_steps for r in rows)
    report = result.report()
    for key in ("heads_removed_frac", "dense_test_acc", "compressed_test_acc", "seconds",
                "retraining_free_heads_removed_frac", "trajectory"):
        assert key in report


def test_a_failed_candidate_that_stops_improving_is_rolled_back():
    dense, data = setup()
    quiet = dict(max_drop=0.0, lr=1e-12, metric="gradient", lsq_feed_forward=False)  # distillation changes nothing
    _, result = compress(dense, data, **quiet, **FAST)
    distil = [r for r in result.trajectory if r.phase == "distil"]
    assert len(distil) > 1 and not any(r.accepted for r in distil)
    for r in distil:  # no gain after the second slice: at that pace it never gets there, rolled back
        assert len(r.slice_vals) == 2 and len(set(r.slice_vals)) == 1
    assert [r.heads_removed for r in distil] == sorted((r.heads_removed for r in distil), reverse=True)
    _, capped = compress(dense, data, **quiet, max_slices=1, **FAST)
    assert all(len(r.slice_vals) == 1 for r in capped.trajectory if r.phase == "distil")


def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    dense, data = setup()
    options = dict(max_drop=2.0, **FAST)
    full_model, full = compress(dense, data, state_dir=tmp_path / "full", **options)
    assert len(full.trajectory[3].slice_vals) >= 2  # the scenario: step 4 needs a second slice
    messages = []

    def stop_in_a_second_slice():  # asked before every training step: step 4's second slice is cut mid-way
        return bool(messages) and "one more" in messages[-1] and "step 2/" in messages[-1]

    _, cut = compress(dense, data, state_dir=tmp_path / "cut", should_stop=stop_in_a_second_slice,
                      progress=lambda fraction, message: messages.append(message), **options)
    assert cut.stopped_by == "cancelled" and cut.test is None and len(cut.trajectory) == 3 < len(full.trajectory)
    assert CHECKPOINTS.record(tmp_path / "cut") is not None
    resumed_model, resumed = compress(dense, data, state_dir=tmp_path / "cut", resume=True, **options)
    assert resumed.resumed and without_time(resumed) == without_time(full)
    assert torch.equal(resumed.keep, full.keep) and resumed.test == full.test and resumed.val == full.val
    a, b = full_model.state_dict(), resumed_model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="another run"):
        compress(dense, data, state_dir=tmp_path / "cut", resume=True, **{**options, "max_drop": 4.0})


def test_a_tiny_time_budget_stops_on_time_and_still_reports():
    dense, data = setup()
    model, result = compress(dense, data, max_drop=50.0, time_budget=0.5)
    assert result.stopped_by == "time" and result.retraining_free["stopped_by"] == "time"
    assert result.heads_removed == 0 and result.test == result.dense_test
    assert result.seconds < 30


def test_the_target_stops_the_climb():
    dense, data = setup()
    _, result = compress(dense, data, max_drop=100.0, target_heads=0.25, distill=False, time_budget=600)
    assert result.stopped_by == "target" and result.heads_removed == 3 and result.distill_steps == 0
    assert result.retraining_free["heads_removed"] == 3 and result.test == result.retraining_free["test"]


@pytest.mark.parametrize("family, unit", [("bert", "uniform"), ("llama", "kv-group"), ("llama", "uniform")])
def test_units_keep_runtime_safe_shapes(family, unit):
    dense, data = setup(family)
    size = 3 if family == "llama" else 1  # tiny llama: 6 query heads in 2 KV groups
    _, result = compress(dense, data, max_drop=100.0, unit=unit, distill=False, time_budget=600)
    assert result.heads_removed > 0
    keep = result.keep
    groups = keep.view(keep.shape[0], -1, size)
    assert bool((groups.all(-1) | ~groups.any(-1)).all())  # whole groups only
    if unit == "uniform":
        assert len(set(keep.sum(-1).tolist())) == 1


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_reconstruction_order_climbs_within_the_budget(family):
    """The order least squares best makes up for, re-computed on each accepted model (llama: pre-norm, so no
    feed-forward refit; bert: with it, by default)."""
    dense, data = setup(family)
    _, result = compress(dense, data, max_drop=5.0, metric="reconstruction", distill=False, time_budget=600)
    assert result.heads_removed > 0
    for row in result.trajectory:
        assert (row.val >= result.threshold) == row.accepted


def test_auto_hands_the_distillation_phase_gradient_scores_of_the_retraining_free_model(tmp_path):
    """metric "auto": the least-squares phase ranks by reconstruction, distillation by the loss gradient, re-scored
    on the least-squares result when the phase changes (the run is stopped as distillation begins: the state
    then holds those scores)."""
    dense, data = setup()
    messages = []
    _, result = compress(dense, data, max_drop=2.0, state_dir=tmp_path, progress=lambda f, m: messages.append(m),
                         should_stop=lambda: any(m.startswith("distil") for m in messages), **FAST)
    assert result.stopped_by == "cancelled" and all(r.phase == "least-squares" for r in result.trajectory)
    state = json.loads((tmp_path / STATE_FILE).read_text())["state"]
    keep = as_tensor(state["retraining_free"]["keep"], torch.bool)
    free = dense if bool(keep.all()) else prune(lsq_recover(dense, keep, data.calib, feed_forward=True).bake(dense), keep)
    expected = score_heads(free, data.calib, "gradient", cache=False)
    torch.testing.assert_close(as_tensor(state["scores"]), expected, equal_nan=True)
    assert not torch.allclose(expected.nan_to_num(), reconstruction_scores(free, data.calib).nan_to_num())


def test_a_feed_forward_refit_where_the_model_has_none_is_refused_before_any_work():
    dense, data = setup("gpt2")
    with pytest.raises(UserError, match="post-norm") as caught:
        compress(dense, data, lsq_feed_forward=True, should_stop=lambda: pytest.fail("work started"))
    assert caught.value.option == "lsq_feed_forward"


@pytest.mark.parametrize("option, value, match", [
    ("max_drop", math.nan, "quality budget"), ("max_drop", -1.0, "quality budget"),
    ("time_budget", 0, "time budget"), ("time_budget", math.inf, "time budget"),
    ("target_heads", 0.0, "fraction of all heads"), ("target_heads", 1.5, "fraction of all heads"),
    ("unit", "layer", "unit must be one of"), ("metric", "ablation", "re-scores heads"),
    ("distill_steps", 0, "distill_steps"), ("lsq_feed_forward", "yes", "lsq_feed_forward"),
])
def test_bad_settings_are_refused_before_any_work(option, value, match):
    dense, data = setup()
    with pytest.raises(UserError, match=match) as caught:
        compress(dense, data, should_stop=lambda: pytest.fail("work started"), **{option: value})
    assert caught.value.option == option


def test_missing_data_and_a_resume_without_a_folder_are_refused():
    dense, data = setup()
    with pytest.raises(UserError, match="judge examples"):
        compress(dense, CompressData(judge=[], calib=data.calib, train=data.train, test=data.test))
    with pytest.raises(UserError, match="state folder") as caught:
        compress(dense, data, resume=True)
    assert caught.value.option == "state_dir"
