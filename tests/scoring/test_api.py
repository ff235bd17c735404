"""Head-importance metrics on tiny random models: exactness against direct computations, options, cache."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from headprune.evaluation.loop import evaluate
from headprune.model import layout
from headprune.model.forward import forward_logits
from headprune.model.intervene import gated, masked
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.scoring.agreement import bootstrap_ranks, compare_metrics, rank_heads
from headprune.scoring.api import contributions, score_heads, score_many
from headprune.scoring.attention import attention_pattern, batch_attentions
from headprune.scoring.cache import model_fingerprint
from headprune.scoring.registry import METRICS

FAMILIES = ["bert", "gpt2", "llama"]  # encoder classifier, GPT-2, grouped-query Llama


@pytest.fixture(autouse=True)
def _score_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))


def _setup(family, n_batches=2, batch_size=4):
    model = tiny_model(family)
    return model, [tiny_batch(model, batch_size=batch_size, seed=s) for s in range(n_batches)]


def _loss(model, batch, gates):
    """Mean per-example loss (LM: per-sequence token mean) in float64, under gates (L, H)."""
    with torch.no_grad(), gated(model, gates):
        logits = forward_logits(model, batch).double()
    labels = batch["labels"]
    if layout.task_of(model) == "classification":
        return F.cross_entropy(logits, labels).item()
    logits, labels = logits[:, :-1], labels[:, 1:]
    tokens = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    return (tokens.sum(-1) / (labels != -100).sum(-1)).mean().item()


@pytest.mark.parametrize("family", FAMILIES + ["distilbert"])
def test_ablation_equals_masked_minus_dense_evaluation(family):
    model, batches = _setup(family)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[1, 0] = False  # score under a mask, as iterative pruning does
    scores = score_heads(model, batches, "ablation", keep=keep, cache=False)
    dense = evaluate(model, batches, keep)["loss"]
    for layer, head in np.ndindex(*keep.shape):
        if not keep[layer, head]:
            assert torch.isnan(scores[layer, head])
            continue
        without = keep.clone()
        without[layer, head] = False
        expected = evaluate(model, batches, without)["loss"] - dense
        assert abs(scores[layer, head].item() - expected) < 1e-5, (layer, head)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_matches_central_finite_difference(family):
    model = copy.deepcopy(tiny_model(family)).double()
    batch = {k: v[2:3] for k, v in tiny_batch(model).items()}  # one (padded) example: |.| cannot cancel
    grid = layout.head_grid(model)
    scores = score_heads(model, [batch], "gradient", cache=False)
    # Llama's RMSNorm computes in float32 even in a float64 model: a wider step, a float32 tolerance
    eps, rel = (3e-3, 2e-3) if family == "llama" else (1e-4, 1e-4)
    for layer, head in [(0, 0), (1, 2), (grid[0] - 1, grid[1] - 1)]:
        plus, minus = torch.ones(grid, dtype=torch.float64), torch.ones(grid, dtype=torch.float64)
        plus[layer, head] += eps
        minus[layer, head] -= eps
        estimate = (_loss(model, batch, plus) - _loss(model, batch, minus)) / (2 * eps)
        assert scores[layer, head].item() == pytest.approx(abs(estimate), rel=rel, abs=1e-4 * rel)


def test_fisher_is_the_sum_of_squared_per_example_gradients():
    model, batches = _setup("bert", n_batches=1)
    maps = score_many(model, batches, ["gradient", "fisher"], cache=False)
    singles = [score_heads(model, [{k: v[i:i + 1] for k, v in batches[0].items()}], "gradient", cache=False)
               for i in range(4)]
    torch.testing.assert_close(maps["fisher"], torch.stack(singles).square().sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(maps["gradient"], torch.stack(singles).mean(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_mean_is_the_same_for_every_head(family):
    model, batches = _setup(family)
    assert (batches[0]["attention_mask"] == 0).any()  # padding present
    scores = score_heads(model, batches, "attention_mean", cache=False)
    expected = np.mean([1 / n for b in batches for n in b["attention_mask"].sum(-1).tolist()])
    torch.testing.assert_close(scores, torch.full_like(scores, expected), rtol=1e-5, atol=1e-6)
    assert METRICS["attention_mean"].teaching and "identical" in METRICS["attention_mean"].description


@pytest.mark.parametrize("family", FAMILIES)
def test_every_metric_has_the_right_shape_is_finite_and_deterministic(family):
    model, batches = _setup(family)
    first = score_many(model, batches, list(METRICS), cache=False)
    second = score_many(model, batches, list(METRICS), cache=False)
    for name in METRICS:
        assert first[name].shape == layout.head_grid(model) and first[name].dtype == torch.float32
        assert torch.isfinite(first[name]).all(), name
        assert torch.equal(first[name], second[name]), name
    other_seed = score_heads(model, batches, "random", seed=1, cache=False)
    assert not torch.equal(other_seed, first["random"])


def test_masked_and_pruned_heads_are_nan_and_pruning_keeps_the_other_scores():
    model, batches = _setup("bert")
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 1] = keep[2, 3] = False
    names = ["gradient", "norm", "entropy", "magnitude", "random"]
    masked_scores = score_many(model, batches, names, keep=keep, cache=False)
    pruned_scores = score_many(prune(model, keep), batches, names, cache=False)
    for name in names:
        assert torch.isnan(masked_scores[name][~keep]).all() and torch.isnan(pruned_scores[name][~keep]).all()
        torch.testing.assert_close(pruned_scores[name][keep], masked_scores[name][keep], rtol=1e-4, atol=1e-5)


def test_magnitude_divides_shared_key_value_heads_among_their_group():
    model = tiny_model("llama")  # 6 query heads, 2 KV heads: groups of 3
    attn = layout.attention_modules(model)[0]
    dh = layout.head_dim(model)
    q, k, v, o = (w.detach().double() for w in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight))
    head, group = 4, 1
    expected = (q[head * dh:(head + 1) * dh].square().sum() + (k[group * dh:(group + 1) * dh].square().sum()
                + v[group * dh:(group + 1) * dh].square().sum()) / 3 + o[:, head * dh:(head + 1) * dh].square().sum()).sqrt()
    assert score_heads(model, [], "magnitude", cache=False)[0, head].item() == pytest.approx(expected.item(), rel=1e-6)


def test_normalisation_options_do_what_they_say():
    model, batches = _setup("bert")
    plain = score_heads(model, batches, "gradient", cache=False)
    layered = score_heads(model, batches, "gradient", normalise_layers=True)
    torch.testing.assert_close(layered.norm(dim=-1), torch.ones(plain.shape[0]))
    torch.testing.assert_close(layered, plain / plain.norm(dim=-1, keepdim=True))
    both = score_heads(model, batches, "gradient", normalise_layers=True, global_minmax=True)
    assert both.min().item() == 0.0 and both.max().item() == pytest.approx(1.0)
    assert torch.equal(rank_heads(both), rank_heads(layered))
    raw = score_heads(model, batches, "entropy", raw=True)
    torch.testing.assert_close(raw, -score_heads(model, batches, "entropy"))
    with pytest.raises(ValueError, match="raw=True"):
        score_heads(model, batches, "entropy", raw=True, global_minmax=True)
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        score_heads(model, batches, "nope")
    with pytest.raises(ValueError, match="max examples"):
        score_heads(model, batches, "norm", max_examples=0)


def test_max_examples_and_progress():
    model, batches = _setup("bert")
    seen = []
    limited = score_heads(model, batches, "norm", max_examples=5, cache=False, progress=lambda f, m: seen.append(f))
    expected = score_heads(model, [batches[0], {k: v[:1] for k, v in batches[1].items()}], "norm", cache=False)
    torch.testing.assert_close(limited, expected)
    assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and seen == sorted(seen)


def test_cache_hit_is_identical_and_skips_work_and_weight_changes_miss(monkeypatch):
    model, batches = _setup("bert")
    first = score_heads(model, batches, "ablation", keep=None)
    import headprune.scoring.api as score_module

    def fail(*args, **kwargs):
        raise AssertionError("recomputed despite a cache entry")

    monkeypatch.setattr(score_module, "ablation_statistic", fail)
    again = score_heads(model, batches, "ablation", normalise_layers=True)  # display options reuse the entry
    assert torch.equal(score_heads(model, batches, "ablation"), first)
    assert torch.isfinite(again).all()
    changed = copy.deepcopy(model)
    with torch.no_grad():
        layout.out_projections(changed)[1].weight[0, 0] += 1e-3
    assert model_fingerprint(changed) != model_fingerprint(model)
    with pytest.raises(AssertionError, match="recomputed"):
        score_heads(changed, batches, "ablation")
    with pytest.raises(AssertionError, match="recomputed"):
        score_heads(model, batches, "ablation", cache=False)


def test_attention_weights_come_from_a_twin_and_never_switch_the_shared_model():
    from headprune.model import intervene

    model, batches = _setup("bert")
    assert model.config._attn_implementation == "sdpa"
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 1] = False
    with masked(model, keep):  # the caller's mask reaches the twin: layer 1's attention changes
        masked_attentions = batch_attentions(model, batches[0])
    attentions = batch_attentions(model, batches[0])
    assert model.config._attn_implementation == "sdpa" and attentions[0].shape == (4, 4, 12, 12)
    torch.testing.assert_close(masked_attentions[0], attentions[0])
    assert not torch.allclose(masked_attentions[1], attentions[1])
    assert not intervene.attached(model)  # nothing left on the shared model
    twin = intervene._twin(model, "eager")
    assert twin.config._attn_implementation == "eager"
    assert all(a is b for a, b in zip(twin.parameters(), model.parameters()))  # the weights are shared, not copied


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_attention_pattern_covers_the_non_pad_tokens(family):
    model, batches = _setup(family)
    batch = batches[0]
    row = int(batch["attention_mask"].sum(-1).argmin())
    n = int(batch["attention_mask"][row].sum())
    weights, ids = attention_pattern(model, batch, row, 1, 2)
    assert weights.shape == (n, n) and ids.tolist() == batch["input_ids"][row, :n].tolist()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    if family == "llama":
        assert np.allclose(np.triu(weights, 1), 0)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[1, 2] = False
    pruned = prune(model, keep)
    with pytest.raises(ValueError, match="pruned away"):
        attention_pattern(pruned, batch, row, 1, 2)


def test_compare_metrics_and_bootstrap_ranks():
    model, batches = _setup("bert")
    maps = score_many(model, batches, ["gradient", "fisher", "random", "attention_mean"], cache=False)
    result = compare_metrics(maps)
    for table in (result["spearman"], result["kendall"]):
        assert list(table.index) == list(maps) and np.allclose(table.values, table.values.T, equal_nan=True)
        assert table.loc["gradient", "gradient"] == pytest.approx(1.0)
        assert np.isnan(table.loc["attention_mean", "gradient"])  # constant map: no ranking
    assert result["n_heads"] == 12
    boot = bootstrap_ranks(model, batches, "gradient", n_boot=10, seed=3)
    again = bootstrap_ranks(model, batches, "gradient", n_boot=10, seed=3)
    assert all(torch.equal(boot[k], again[k]) for k in boot)
    assert set(boot["rank"].flatten().tolist()) == set(range(1, 13))
    assert (boot["low"] <= boot["high"]).all() and boot["uncertain"].dtype == torch.bool
    fixed = bootstrap_ranks(model, batches, "magnitude", n_boot=5)
    assert torch.equal(fixed["low"], fixed["high"]) and not fixed["uncertain"].any()


def test_ablation_per_example_contributions_add_up_to_the_score():
    model, batches = _setup("gpt2")
    parts = contributions(model, batches, "ablation")
    assert parts.values.shape[0] == 8
    torch.testing.assert_close(parts.aggregate().float(), score_heads(model, batches, "ablation", cache=False),
                               rtol=1e-4, atol=1e-6)


def test_ablation_replays_the_attention_of_the_ablated_layer_instead_of_recomputing_it():
    model, batches = _setup("bert")
    calls = []
    query = layout.blocks(model)[0].attention.self.query
    handle = query.register_forward_hook(lambda *args: calls.append(1))
    try:
        score_heads(model, batches, "ablation", cache=False)
    finally:
        handle.remove()
    assert len(calls) == len(batches)  # only the reference pass: layer-0 heads reuse its attention
