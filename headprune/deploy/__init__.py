"""The last mile: a file the deployment runtime opens, proven equal and proven faster there.

* `export_onnx` (export.py): ONNX export of a pruned (optionally recovered) model, any family and mask, with
  ONNX Runtime parity and a `<file>.headprune.json` sidecar; `read_sidecar` recognises such files.
* `check_parity`, `session` (runtime.py): ONNX Runtime sessions and ORT-vs-PyTorch parity on given batches.
* `measure_onnx`, `compare_runtimes`, `LatencySettings` (latency.py): dense vs pruned latency in ONNX Runtime,
  and beside PyTorch at the same batch size, sequence length and threads.
* `loads_in`, `round_to_uniform`, `uniform_head_counts` (shapes.py): where a mask's pruned model loads
  (headprune, plain transformers, ONNX Runtime, fixed-shape engines), and the nearest runtime-safe mask.
"""
from __future__ import annotations

from .export import OnnxExport, export_onnx, read_sidecar, sidecar_path
from .latency import LatencySettings, RuntimeLatency, compare_runtimes, measure_onnx
from .runtime import Parity, check_parity, session
from .shapes import (
    LoadsIn,
    UniformMask,
    Verdict,
    layer_shapes,
    loads_in,
    round_to_uniform,
    uniform_head_counts,
)

__all__ = [
    "LatencySettings",
    "LoadsIn",
    "OnnxExport",
    "Parity",
    "RuntimeLatency",
    "UniformMask",
    "Verdict",
    "check_parity",
    "compare_runtimes",
    "export_onnx",
    "layer_shapes",
    "loads_in",
    "measure_onnx",
    "read_sidecar",
    "round_to_uniform",
    "session",
    "sidecar_path",
    "uniform_head_counts",
]
