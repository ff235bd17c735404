"""The closed vocabularies of headprune, as `Literal` types with their runtime tuples (one definition each)."""
from __future__ import annotations

from typing import Literal, get_args

Task = Literal["classification", "causal-lm", "masked-lm"]
UnitMode = Literal["head", "group-equal", "kv-group"]
CurveMode = Literal["one-shot", "iterative"]
RecoveryMethod = Literal["scales", "weights"]
RecoveryTarget = Literal["auto", "dense", "local"]
Reduce = Literal["mean", "sum"]
LatencyRuntime = Literal["torch", "onnxruntime", "both"]  # where a latency check times: PyTorch, ONNX Runtime, both
CompressUnit = Literal["head", "kv-group", "uniform"]

TASKS: tuple[str, ...] = get_args(Task)
UNIT_MODES: tuple[str, ...] = get_args(UnitMode)
CURVE_MODES: tuple[str, ...] = get_args(CurveMode)
RECOVERY_METHODS: tuple[str, ...] = get_args(RecoveryMethod)
RECOVERY_TARGETS: tuple[str, ...] = get_args(RecoveryTarget)
LATENCY_RUNTIMES: tuple[str, ...] = get_args(LatencyRuntime)
COMPRESS_UNITS: tuple[str, ...] = get_args(CompressUnit)

IGNORE_INDEX = -100  # label id that losses and metrics skip (padding, unmasked tokens)
