"""Analytic FLOPs / parameters and measured latency of dense vs physically pruned models."""
from __future__ import annotations

import pytest
import torch

from headprune.evaluation.cost import flops_per_token, params_after
from headprune.evaluation.latency import measure
from headprune.model import layout
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_model
from headprune.model.units import to_units


def _keep(model):
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, :2] = False
    keep[1] = False  # a whole layer
    return keep


@pytest.mark.parametrize("family", ["bert", "gpt2", "distilbert", "llama"])
def test_params_and_flops_match_the_pruned_model(family):
    model = tiny_model(family)
    keep = _keep(model)
    if family == "llama":
        keep = to_units(keep, model, "kv-group")  # no KV copies: the ideal count is exact
    pruned = prune(model, keep)
    assert params_after(model, keep) == layout.parameter_count(pruned) < layout.parameter_count(model)
    assert flops_per_token(model, keep, 12) == flops_per_token(pruned, None, 12) < flops_per_token(model, None, 12)
    assert params_after(model, None) == layout.parameter_count(model)


def test_flops_formula_on_bert():
    model = tiny_model("bert")  # d=32, 3 layers, 4 heads (dh=8), intermediate 37, 3 labels
    d, dh, ff, layers, heads, t = 32, 8, 37, 3, 4, 10
    per_layer = 4 * d * d + 2 * d * ff + heads * 2 * t * dh
    head = (d * d + d * 3) / t  # pooler + classifier, once per sequence
    assert flops_per_token(model, None, t) == round(2 * (layers * per_layer + head))
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(model, None, 0)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_measure_fields(family):
    model = tiny_model(family)
    calls = []
    keep = to_units(_keep(model), model, "kv-group")  # whole KV groups: the KV cache shrinks
    threads_before = torch.get_num_threads()
    result = measure(model, keep, batch_size=2, seq_len=8, repeats=3, warmup=1, threads=1,
                     progress=lambda f, m: calls.append(f))
    dense, pruned = result["dense"], result["pruned"]
    for side in (dense, pruned):
        assert 0 < side["latency_ms_p10"] <= side["latency_ms_median"] <= side["latency_ms_p90"]
    assert pruned["params"] < dense["params"]
    assert 0 < result["flop_ratio"] <= 1
    assert result["time_ratio"] == pytest.approx(pruned["latency_ms_median"] / dense["latency_ms_median"])
    assert result["speedup"] == pytest.approx(1 / result["time_ratio"])
    assert result["warning"] is None or "FLOPs" in result["warning"]
    assert ("kv_cache_bytes_per_token" in dense) == (family == "llama")
    if family == "llama":
        assert pruned["kv_cache_bytes_per_token"] < dense["kv_cache_bytes_per_token"]
    assert result["threads"] == 1 and torch.get_num_threads() == threads_before  # fixed while timing, restored
    assert calls[-1] == pytest.approx(1.0)


def test_measure_rejects_bad_arguments():
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match="seq_len"):
        measure(model, None, seq_len=1000, repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        measure(model, None, repeats=0)
