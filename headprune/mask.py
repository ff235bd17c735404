"""Head gates: `masked(model, keep)` and its general form `gated(model, gates)`, plus mask JSON files.

Mechanism: one permanent forward pre-hook on every layer's attention output projection multiplies each head's
slice of the projection's input by a gate. Gate 0 is exact ablation (the head contributes nothing; the
projection bias stays); a gate tensor that requires grad gives dL/dxi_h, the head-importance gradient of
Michel et al. 2019 and Kwon et al. 2022. The gates in force live in a `contextvars.ContextVar` keyed by the
projection module itself, so one cached model serves many threads (Streamlit sessions), each seeing only its
own mask, and a copied model (deepcopy carries the hook) is never affected by gates meant for the original.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import arch
from .atomic import atomic_write_text

MASK_SCHEMA = "headprune.mask/1"

# module (output projection) -> gate for the heads it stores: (H_present,) or per example (B, H_present)
_ACTIVE_GATES: contextvars.ContextVar[dict[nn.Module, torch.Tensor]] = contextvars.ContextVar(
    "headprune_active_gates", default={}
)


def _gate_pre_hook(module: nn.Module, args: tuple) -> tuple | None:
    """Scale head slices of the output projection's input (B, T, H_present*head_dim) by the active gate."""
    gate = _ACTIVE_GATES.get().get(module)
    if gate is None or not args:
        return None
    x = args[0]
    n_heads = gate.shape[-1]
    if n_heads == 0:
        return None
    heads = x.unflatten(-1, (n_heads, x.shape[-1] // n_heads))  # (B, T, H, dh)
    g = gate.to(dtype=x.dtype, device=x.device)
    g = g[:, None, :, None] if g.dim() == 2 else g[:, None]  # (B, 1, H, 1) or (H, 1)
    return (heads * g).flatten(-2), *args[1:]


def _ensure_hooks(model: nn.Module) -> list[nn.Module]:
    """Install the gate hook once per output projection; return the projections, one per layer."""
    projections = arch.out_projections(model)
    for proj in projections:
        if _gate_pre_hook not in proj._forward_pre_hooks.values():
            proj.register_forward_pre_hook(_gate_pre_hook)
    return projections


@contextlib.contextmanager
def gated(model: nn.Module, gates: torch.Tensor) -> Iterator[None]:
    """Run `model` with head gates: `gates` is (L, H) or per example (L, B, H), over original head ids.

    Heads physically pruned away are simply absent. Gates compose multiplicatively with any outer
    `gated`/`masked` block on the same model. Only the current thread (context) is affected.
    """
    expected = arch.head_grid(model)
    if gates.dim() not in (2, 3) or (gates.shape[0], gates.shape[-1]) != expected:
        raise ValueError(f"gates must be shaped (L, H) or (L, B, H) with (L, H) = {expected}, got {tuple(gates.shape)}")
    projections = _ensure_hooks(model)
    present = arch.present_heads(model)
    active = dict(_ACTIVE_GATES.get())
    for layer, proj in enumerate(projections):
        gate = gates[layer][..., present[layer]]
        outer = active.get(proj)
        active[proj] = gate if outer is None else outer * gate
    token = _ACTIVE_GATES.set(active)
    try:
        yield
    finally:
        _ACTIVE_GATES.reset(token)


@contextlib.contextmanager
def masked(model: nn.Module, keep) -> Iterator[None]:
    """Inside the block, heads with keep=False contribute nothing to `model`'s attention output.

    keep: bool tensor / numpy array / nested list shaped `head_grid(model)`, True = keep. Exact for forward
    and backward, any attention backend; the model object is never modified.
    """
    keep = arch.to_keep_tensor(keep, model)
    with gated(model, keep.float()):
        yield


def mask_to_dict(keep, model=None, *, model_id: str | None = None, meta: dict[str, Any] | None = None) -> dict:
    """The JSON-ready mask record: schema, model id, shape, kept heads per layer and free-form meta."""
    keep = arch.to_keep_tensor(keep, model) if model is not None else torch.as_tensor(keep).bool()
    if keep.dim() != 2:
        raise ValueError(f"keep mask must be 2-D (num_layers, num_heads), got shape {tuple(keep.shape)}")
    return {
        "schema": MASK_SCHEMA,
        "model_id": model_id or (getattr(model.config, "_name_or_path", None) if model is not None else None),
        "num_layers": int(keep.shape[0]),
        "num_heads": int(keep.shape[1]),
        "kept_heads": [torch.nonzero(row).flatten().tolist() for row in keep],
        "heads_kept": int(keep.sum()),
        "meta": meta or {},
    }


def write_mask(path: str | Path, keep, model=None, *, model_id: str | None = None, meta: dict | None = None) -> Path:
    """Write a mask JSON file atomically."""
    record = mask_to_dict(keep, model, model_id=model_id, meta=meta)
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def mask_from_dict(record: dict, model=None, *, model_id: str | None = None, check_model_id: bool = True) -> torch.Tensor:
    """Parse a mask record into a bool tensor (L, H); `ValueError` on anything a user must fix."""
    if not isinstance(record, dict) or "kept_heads" not in record:
        raise ValueError("not a headprune mask: expected a JSON object with 'kept_heads' (per layer)")
    schema = record.get("schema", MASK_SCHEMA)
    if schema != MASK_SCHEMA:
        raise ValueError(f"unknown mask schema {schema!r}; this headprune reads {MASK_SCHEMA!r}")
    try:
        layers, heads = int(record["num_layers"]), int(record["num_heads"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("mask is missing integer 'num_layers' / 'num_heads'") from None
    kept = record["kept_heads"]
    if not isinstance(kept, list) or len(kept) != layers:
        raise ValueError(f"mask 'kept_heads' must list {layers} layers")
    if model is not None:
        expected = arch.head_grid(model)
        if (layers, heads) != expected:
            raise ValueError(
                f"mask is for a model with {layers} layers x {heads} heads, this model has "
                f"{expected[0]} x {expected[1]}"
            )
        current_id = model_id or getattr(model.config, "_name_or_path", None)
        if check_model_id and record.get("model_id") and current_id and record["model_id"] != current_id:
            raise ValueError(
                f"mask was made for model {record['model_id']!r}, not {current_id!r} "
                "(load that model, or accept the mask for this one explicitly)"
            )
    keep = torch.zeros(layers, heads, dtype=torch.bool)
    for layer, row in enumerate(kept):
        if not isinstance(row, list) or not all(isinstance(h, int) and 0 <= h < heads for h in row):
            raise ValueError(f"mask layer {layer}: kept heads must be integers in [0, {heads})")
        keep[layer, row] = True
    return keep


def read_mask(path: str | Path, model=None, *, model_id: str | None = None, check_model_id: bool = True) -> torch.Tensor:
    """Read a mask JSON file; `ValueError` for a missing file, malformed JSON, wrong shape or model."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mask file not found: {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"mask file {path} is not valid JSON: {exc}") from None
    return mask_from_dict(record, model, model_id=model_id, check_model_id=check_model_id)
