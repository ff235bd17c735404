"""Retraining-free least-squares recovery: per-head scales (Kwon et al. 2022) and refitted projections."""
from __future__ import annotations

import threading

import pytest
import torch

from headprune.evaluation.loop import evaluate
from headprune.model import intervene, layout
from headprune.model.forward import forward_logits
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lsq import Recovery, lsq_recover, reconstruction_error


def _setup(family):
    model = tiny_model(family)
    batches = [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, :2] = False
    keep[1, 1] = False
    keep[2, 0] = False
    return model, batches, keep


@pytest.mark.parametrize("method", ["scales", "weights"])
@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_recovery_lowers_reconstruction_error_and_bakes_exactly(family, method):
    model, batches, keep = _setup(family)
    result = lsq_recover(model, keep, batches, method=method)
    assert result.method == method and torch.equal(result.keep, keep)
    assert torch.all(result.gates[~keep] == 0)
    before = reconstruction_error(model, Recovery.of_mask(model, keep), batches)
    after = reconstruction_error(model, result, batches)
    assert torch.all(after <= before + 1e-6) and after.sum() < before.sum()
    with result.applied(model):
        live = evaluate(model, batches)
    assert evaluate(model, batches)["loss"] != pytest.approx(live["loss"], rel=1e-6)  # gone after the block
    recovered = prune(result.bake(model), keep)
    assert evaluate(recovered, batches)["loss"] == pytest.approx(live["loss"], rel=1e-4)
    if not layout.is_gqa(model):  # GQA: partially pruned groups may store KV copies (see `prune`)
        assert layout.parameter_count(recovered) < layout.parameter_count(model)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_refitting_whole_columns_fits_at_least_as_well_as_scales(family):
    """Undamped, the first changed layer sees the dense input either way, and per-head scales are a special
    case of refitted columns, so the refit's error there can only be lower."""
    model, batches, keep = _setup(family)
    scales = reconstruction_error(model, lsq_recover(model, keep, batches, method="scales", damping=0), batches)
    weights = reconstruction_error(model, lsq_recover(model, keep, batches, method="weights", damping=0), batches)
    assert weights[0] <= scales[0] + 1e-6 and weights[0] < 0.99 * scales[0]


@pytest.mark.parametrize("family, auto", [("bert", "dense"), ("distilbert", "dense"), ("gpt2", "local"), ("llama", "local")])
def test_targets_agree_on_the_first_changed_layer_and_auto_follows_the_norm_placement(family, auto):
    """Upstream of the first changed layer nothing differs, so fitting the dense model's output or the dense
    attention on the pruned input is the same problem there; later layers differ."""
    model, batches, keep = _setup(family)
    dense = lsq_recover(model, keep, batches, target="dense")
    local = lsq_recover(model, keep, batches, target="local")
    assert (dense.target, local.target, lsq_recover(model, keep, batches).target) == ("dense", "local", auto)
    torch.testing.assert_close(dense.weights[0], local.weights[0])
    assert not torch.allclose(dense.weights[1], local.weights[1])
    with pytest.raises(ValueError, match="target"):
        lsq_recover(model, keep, batches, target="global")


def test_bias_free_projections_stay_bias_free_and_whole_layers_can_go():
    model, batches, keep = _setup("llama")
    keep[-1] = False
    result = lsq_recover(model, keep, batches, method="weights")
    assert all(b is None for b in result.biases)
    assert torch.count_nonzero(result.weights[-1]) == 0
    bert, bert_batches, bert_keep = _setup("bert")
    bert_keep[-1] = False  # no head left: the refitted bias carries the layer's mean attention output
    result = lsq_recover(bert, bert_keep, bert_batches, method="weights")
    assert torch.count_nonzero(result.weights[-1]) == 0
    assert not torch.allclose(result.biases[-1], layout.out_projections(bert)[-1].bias)
    with result.applied(bert):
        expected = evaluate(bert, bert_batches)["loss"]
    assert evaluate(prune(result.bake(bert), bert_keep), bert_batches)["loss"] == pytest.approx(expected, rel=1e-4)


def test_recovery_is_scoped_to_its_thread():
    model, batches, keep = _setup("bert")
    result = lsq_recover(model, keep, batches)
    dense = forward_logits(model, batches[0])
    seen = {}
    entered, checked = threading.Event(), threading.Event()

    def other():
        entered.wait()
        seen["other"] = forward_logits(model, batches[0])
        checked.set()

    thread = threading.Thread(target=other)
    thread.start()
    with torch.no_grad(), result.applied(model):
        entered.set()
        checked.wait(30)
        mine = forward_logits(model, batches[0])
    thread.join()
    torch.testing.assert_close(seen["other"], dense)
    assert not torch.allclose(mine, dense)


@pytest.mark.parametrize("method", ["scales", "weights"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_physically_pruned_model_can_be_refitted_and_pruned_further(family, method):
    """Masks name original head ids; heads already gone stay gone; the fit's target is the pruned model itself."""
    model, batches, keep = _setup(family)
    first = torch.ones_like(keep)
    first[1, -1] = False
    pruned = prune(model, first)
    nothing_new = lsq_recover(pruned, first, batches, method=method)
    assert all(w is None for w in nothing_new.weights)
    result = lsq_recover(pruned, keep, batches, method=method)
    assert torch.equal(result.keep, keep & first) and torch.all(result.gates[~(keep & first)] == 0)
    before = reconstruction_error(pruned, Recovery.of_mask(pruned, keep), batches)
    after = reconstruction_error(pruned, result, batches)
    assert torch.all(after <= before + 1e-6) and after.sum() < before.sum()
    with result.applied(pruned):
        live = evaluate(pruned, batches)
    smaller = prune(result.bake(pruned), keep)
    assert torch.equal(layout.kept_mask(smaller), keep & first)
    assert evaluate(smaller, batches)["loss"] == pytest.approx(live["loss"], rel=1e-4)


def test_unchanged_mask_changes_nothing_and_bad_input_is_rejected():
    model, batches, _ = _setup("bert")
    full = torch.ones(layout.head_grid(model), dtype=torch.bool)
    for method in ("scales", "weights"):
        result = lsq_recover(model, full, batches, method=method)
        assert all(w is None for w in result.weights) and torch.equal(result.gates, full.float())
    with pytest.raises(ValueError, match="damping"):
        lsq_recover(model, full, batches, damping=-1)
    with pytest.raises(ValueError, match="method"):
        lsq_recover(model, full, batches, method="magic")
    with pytest.raises(ValueError, match="calibration batch"):
        lsq_recover(model, full, [])
    other = tiny_model("bert", num_hidden_layers=2)
    with pytest.raises(ValueError, match="recovery is for"):
        lsq_recover(model, ~torch.eye(*full.shape, dtype=torch.bool), batches).bake(other)


def _backbone_error(model, batches, recovery) -> float:
    """Squared error of the last block's output under `recovery` vs the dense model, summed over real tokens."""
    total = 0.0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            dense = model.base_model(**inputs).last_hidden_state
            with recovery.applied(model):
                mine = model.base_model(**inputs).last_hidden_state
            total += float(((mine - dense) ** 2)[batch["attention_mask"].bool()].sum())
    return total


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_refitting_the_feed_forward_outputs_too_fits_better_and_bakes_exactly(family):
    model, batches, keep = _setup(family)
    keep[0] = True  # layer 0 unchanged: its feed-forward stays as it is
    attention_only = lsq_recover(model, keep, batches)
    both = lsq_recover(model, keep, batches, feed_forward=True)
    assert not attention_only.feed_forward and both.feed_forward
    assert both.ffn_weights[0] is None and all(w is not None for w in both.ffn_weights[1:])
    ffn_out = [out for _, out in layout.ffn_projections(model)]
    assert all(w.shape == proj.weight.shape for w, proj in zip(both.ffn_weights[1:], ffn_out[1:]))
    assert not torch.equal(both.ffn_weights[1], ffn_out[1].weight)
    assert _backbone_error(model, batches, both) < _backbone_error(model, batches, attention_only)
    with torch.no_grad(), both.applied(model):
        live = forward_logits(model, batches[0])
    assert not intervene.attached(model)
    smaller = prune(both.bake(model), keep)
    torch.testing.assert_close(forward_logits(smaller, batches[0]), live, rtol=1e-4, atol=1e-5)
    assert torch.equal(layout.ffn_projections(model)[1][1].weight, ffn_out[1].weight)  # the model is unchanged


@pytest.mark.parametrize("family, target", [("gpt2", "auto"), ("llama", "dense"), ("bert", "local")])
def test_feed_forward_refit_is_refused_where_it_does_not_apply(family, target):
    """Pre-norm blocks never normalise the residual sum the feed-forward output joins, and the "local" target
    asks nothing of it: refused by name, before any work."""
    model, batches, keep = _setup(family)
    with pytest.raises(ValueError, match="feed-forward") as caught:
        lsq_recover(model, keep, [], target=target, feed_forward=True)
    assert caught.value.option == "feed_forward"
