"""Masks on a running model (headprune.model.intervene): exact head ablation that leaves the model untouched,
gradients through the gates, each thread its own mask, bad masks refused, layer plans scoped to their block."""
from __future__ import annotations

import threading

import pytest
import torch
from helpers.masks import FAMILY_TASKS
from helpers.masks import logits as _logits
from helpers.masks import random_keep as _random_keep
from helpers.masks import reference_ablation as _reference_ablation

import headprune
from headprune.model import layout
from headprune.model.forward import forward_logits
from headprune.model.intervene import layer_plan
from headprune.model.tiny import tiny_batch, tiny_model


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_masked_equals_reference_ablation_and_leaves_model_untouched(family, task):
    model = tiny_model(family, task)
    batch = tiny_batch(model)
    keep = _random_keep(model)
    dense = _logits(model, batch)
    with headprune.masked(model, keep):
        got = _logits(model, batch)
    assert not torch.allclose(got, dense, atol=1e-3), "masking half the heads must change the output"
    torch.testing.assert_close(got, _reference_ablation(model, keep, batch), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(model, batch), dense)  # outside the block: untouched


def test_gradients_flow_through_masked_model():
    model = tiny_model("bert")
    batch = tiny_batch(model)
    keep = _random_keep(model)
    with headprune.masked(model, keep):
        model(**batch).loss.backward()
    q = model.bert.encoder.layer[0].attention.self.query.weight.grad
    assert q is not None and torch.isfinite(q).all()
    model.zero_grad()


def test_threads_see_only_their_own_mask():
    model = tiny_model("bert")
    batch = tiny_batch(model)
    masks = [_random_keep(model, seed=s) for s in range(4)]
    expected = []
    for keep in masks:
        with headprune.masked(model, keep):
            expected.append(_logits(model, batch))
    results: dict[int, list[bool]] = {i: [] for i in range(4)}
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait()
        for _ in range(5):
            with headprune.masked(model, masks[i]):
                results[i].append(torch.allclose(_logits(model, batch), expected[i], atol=1e-6))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(all(r) and len(r) == 5 for r in results.values())


def test_bad_masks_rejected():
    model = tiny_model("bert")  # 3 x 4
    with pytest.raises(ValueError, match=r"expected \(num_layers, num_heads\) = \(3, 4\)"):
        with headprune.masked(model, torch.ones(2, 4, dtype=torch.bool)):
            pass
    with pytest.raises(ValueError, match="booleans"):
        with headprune.masked(model, torch.full((3, 4), 0.5)):
            pass
    with pytest.raises(ValueError, match="booleans or 0/1"):
        with headprune.masked(model, [[2] * 4] * 3):
            pass
    with headprune.masked(model, [[1, 0, 1, 1]] * 3):  # nested 0/1 lists are fine
        pass


def _full(model, batch, keep):
    with torch.no_grad(), headprune.masked(model, keep):
        return forward_logits(model, batch)


def test_layer_plan_is_scoped_and_validated():
    model = tiny_model("bert")
    batch = tiny_batch(model)
    dense = _full(model, batch, None)
    record: list = []
    with torch.no_grad(), layer_plan(model, 0, record=record):
        forward_logits(model, batch)
    assert len(record) == layout.num_layers(model)
    torch.testing.assert_close(_full(model, batch, None), dense)  # plan gone after the block
    one: list = []
    with torch.no_grad(), layer_plan(model, 1, record[1], one, end=2):  # layer 1 alone, from its cached input
        forward_logits(model, batch)
    assert len(one) == 2  # its input, then its output (= layer 2's input)
    torch.testing.assert_close(one[1], record[2])
    with pytest.raises(ValueError, match="layers to run must satisfy"):
        with layer_plan(model, 7):
            pass


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_feed_forward_inputs_are_captured_and_replaced_weights_apply(family):
    """Post-norm families name the feed-forward sub-block: its input is the residual its output joins (the
    block's output is LayerNorm(h + W·a + b)), and a replaced output projection changes only this thread."""
    from headprune.model.intervene import attached, capture_ffn_inputs, replaced_projections

    model = tiny_model(family)
    batch = tiny_batch(model, seed=0, batch_size=4)
    with torch.no_grad(), capture_ffn_inputs(model) as captured:
        hidden = model.base_model(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
    assert [len(h) for h, a in captured] == [1] * layout.num_layers(model)
    (h,), (a,) = captured[-1]
    first, out = layout.ffn_projections(model)[-1]
    norm = layout.blocks(model)[-1].output.LayerNorm if family == "bert" else layout.blocks(model)[-1].output_layer_norm
    torch.testing.assert_close(norm(h + out(a)), hidden)
    assert a.shape[-1] == out.weight.shape[1] and h.shape[-1] == first.weight.shape[1]
    dense = forward_logits(model, batch)
    zero = (torch.zeros_like(out.weight), torch.zeros_like(out.bias))
    with torch.no_grad(), replaced_projections(model, {}, {layout.num_layers(model) - 1: zero}):
        changed = forward_logits(model, batch)
    assert not torch.allclose(changed, dense) and not attached(model)
    torch.testing.assert_close(forward_logits(model, batch), dense)
    with pytest.raises(ValueError, match="feed-forward"), capture_ffn_inputs(tiny_model("gpt2")):
        pass


def test_a_capture_can_end_the_pass_at_a_layer():
    """`stop_after`: layer 0's context vectors are captured, then the pass ends (nothing later runs)."""
    from headprune.model.intervene import ForwardStopped, attached, capture_out_inputs

    model = tiny_model("bert")
    batch = tiny_batch(model, seed=0, batch_size=4)
    with torch.no_grad(), capture_out_inputs(model) as full:
        forward_logits(model, batch)
    with torch.no_grad(), capture_out_inputs(model, stop_after=0) as cut, pytest.raises(ForwardStopped):
        forward_logits(model, batch)
    assert len(cut[0]) == 1 and all(not later for later in cut[1:]) and not attached(model)
    torch.testing.assert_close(cut[0][0], full[0][0])
    forward_logits(model, batch)  # the model runs as before
