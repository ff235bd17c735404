"""Live what-if evaluator: incremental results equal full evaluation, example by example too; the Taylor
estimate is sensible."""
from __future__ import annotations

import pytest
import torch

from headprune.evaluation.live import LiveEvaluator
from headprune.evaluation.loop import evaluate, evaluate_examples
from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model

KINDS = ["bert", "gpt2", "llama"]  # classifier (fast path), causal LM, causal LM with GQA


def _batches(model, n=3):
    return [tiny_batch(model, seed=s) for s in range(n)]


def _same(live, full):
    assert live["loss"] == pytest.approx(full["loss"], rel=1e-5, abs=1e-6)
    assert live["accuracy"] == pytest.approx(full["accuracy"])
    assert live["n"] == full["n"]
    assert set(full) <= set(live)


@pytest.mark.parametrize("family", KINDS)
def test_incremental_equals_full_over_random_toggles(family):
    model = tiny_model(family)
    batches = _batches(model)
    live = LiveEvaluator(model, batches)
    _same(live.dense, evaluate(model, batches))
    gen = torch.Generator().manual_seed(1)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    history = []
    for step in range(10):
        layer = int(torch.randint(keep.shape[0], (1,), generator=gen))
        head = int(torch.randint(keep.shape[1], (1,), generator=gen))
        keep[layer, head] = ~keep[layer, head]
        if step == 4:
            keep[1] = False  # a whole layer off
        if step == 7:
            keep = history[2].clone()  # toggling back to an earlier mask
        history.append(keep.clone())
        result = live.evaluate(keep)
        _same(result, evaluate(model, batches, keep))
        assert result["rerun_from_layer"] is None or 0 <= result["rerun_from_layer"] < keep.shape[0]
        assert torch.equal(live.keep, keep)
    assert live.cache_enabled and live.cache_bytes > 0
    assert live.evaluate(keep)["rerun_from_layer"] is None


def test_last_layer_toggle_reruns_only_it_and_starting_mask():
    model = tiny_model("roberta")
    batches = _batches(model, 2)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 0] = False
    live = LiveEvaluator(model, batches, keep)
    keep[2, 1] = False
    result = live.evaluate(keep)
    assert result["rerun_from_layer"] == 2
    _same(result, evaluate(model, batches, keep))


def test_cache_too_big_degrades_to_full_evaluation():
    model = tiny_model("bert")
    batches = _batches(model, 2)
    live = LiveEvaluator(model, batches, max_cache_bytes=16)
    assert not live.cache_enabled and live.cache_bytes == 0
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[2, 3] = False
    _same(live.evaluate(keep), evaluate(model, batches, keep))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_taylor_estimate_sign_and_order(family):
    model = tiny_model(family, initializer_range=0.08)
    batches = _batches(model, 4)
    live = LiveEvaluator(model, batches)
    grad = live.gate_gradient()
    assert grad.shape == layout.head_grid(model)
    dense_loss = live.dense["loss"]
    # the heads whose first-order effect is largest: there the estimate must be meaningful
    order = grad.abs().flatten().argsort(descending=True)[:3]
    for index in order.tolist():
        keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
        keep.view(-1)[index] = False
        estimate = live.estimate(keep)
        exact = evaluate(model, batches, keep)["loss"] - dense_loss
        assert estimate["delta_loss"] == pytest.approx(-float(grad.view(-1)[index]))
        assert estimate["loss"] == pytest.approx(dense_loss + estimate["delta_loss"], rel=1e-6)
        assert (estimate["delta_loss"] > 0) == (exact > 0)
        assert 0.1 < estimate["delta_loss"] / exact < 10


def test_estimate_follows_the_reference_mask():
    model = tiny_model("bert")
    batches = _batches(model, 2)
    live = LiveEvaluator(model, batches)
    first = live.gate_gradient()
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 0] = False
    live.evaluate(keep)
    assert live.estimate(keep)["delta_loss"] == 0.0
    assert not torch.equal(first, live.gate_gradient())
    assert live.estimate(keep)["reference_loss"] == pytest.approx(evaluate(model, batches, keep)["loss"], rel=1e-5)


def test_estimate_around_the_dense_model_stays_there_when_the_reference_moves():
    model = tiny_model("bert")
    live = LiveEvaluator(model, [tiny_batch(model, batch_size=6)])
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1, 2] = keep[2, 0] = False
    expected = live.estimate(keep)["loss"]  # the reference is still the dense model
    other = torch.ones(3, 4, dtype=torch.bool)
    other[0, 1] = False
    live.evaluate(other)  # moves the reference
    assert live.estimate(keep, around="dense")["loss"] == pytest.approx(expected, rel=1e-5)
    assert live.estimate(keep, around="dense")["reference_loss"] == pytest.approx(live.dense["loss"], rel=1e-5)
    with pytest.raises(ValueError, match="around must be"):
        live.estimate(keep, around="origin")


def test_outputs_of_the_live_evaluator_equal_a_full_pass():
    model = tiny_model("llama")
    from headprune.model.tiny import tiny_batch

    batches = [tiny_batch(model, seed=s) for s in range(2)]
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[1, 2:5] = False
    live = LiveEvaluator(model, batches)
    live.evaluate(keep)
    _, full = evaluate_examples(model, batches, keep)
    assert torch.allclose(live.examples.loss, full.loss, atol=1e-5)
    for x, y in zip(live.examples.token_logprob, full.token_logprob):
        assert torch.equal(x.isnan(), y.isnan()) and torch.allclose(x.nan_to_num(), y.nan_to_num(), atol=1e-5)
