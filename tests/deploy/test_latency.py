"""Latency in ONNX Runtime beside PyTorch (headprune.deploy.latency), and its overhead-bound warning."""
from __future__ import annotations

import pytest

import headprune
from headprune.core.errors import UserError
from headprune.deploy import (
    LatencySettings,
    compare_runtimes,
    measure_onnx,
)
from headprune.deploy.latency import _ort_warning


@pytest.mark.slow
def test_onnx_runtime_latency_beside_torch(exported):
    model, keep, result = exported
    settings = LatencySettings(batch_size=2, seq_len=8, repeats=2, warmup=1, threads=1)
    ort = measure_onnx(model, keep, settings, pruned_path=result.path)
    assert ort.runtime == "onnxruntime" and ort.settings.threads == 1
    assert ort.dense.latency_ms_median > 0 and ort.pruned.latency_ms_median > 0
    assert ort.flop_ratio == pytest.approx(headprune.flops_per_token(model, keep, 8) / headprune.flops_per_token(model, None, 8))
    assert ort.pruned.params < ort.dense.params
    assert set(ort.to_dict()) >= {"time_ratio", "time_ratio_paired", "flop_ratio", "speedup", "warning", "dense", "pruned"}
    torch_side = compare_runtimes(model, keep, settings, runtimes=("torch",))["torch"]
    assert torch_side.runtime == "torch" and torch_side.flop_ratio == pytest.approx(ort.flop_ratio)
    with pytest.raises(UserError, match="unknown runtime"):
        compare_runtimes(model, keep, settings, runtimes=("tensorrt",))
    with pytest.raises(UserError, match="batch_size must be a whole number"):
        measure_onnx(model, keep, LatencySettings(batch_size=0))


def test_overhead_bound_warning_in_onnx_runtime_terms():
    settings = LatencySettings(batch_size=1, seq_len=8, threads=1)
    assert "overhead-bound (per-operator dispatch" in _ort_warning(0.98, 0.7, settings)
    assert _ort_warning(0.75, 0.7, settings) is None  # most of the FLOP saving realised
    assert _ort_warning(1.0, 0.99, settings) is None  # nothing to gain
