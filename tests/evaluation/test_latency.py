"""Measured latency (headprune.evaluation.latency) of dense vs physically pruned models."""
from __future__ import annotations

import pytest
import torch
from helpers.masks import uneven_keep as _keep

from headprune.evaluation.latency import measure
from headprune.model.tiny import tiny_model
from headprune.model.units import to_units


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
