"""The files headprune writes about heads: mask records (`headprune.mask/1`) and score records
(`headprune/scores-v1`), written and read here only, so the CLI's files open in the dashboard and back.

Both hold an (L, H) grid over original head ids: a mask lists the kept heads per layer, a score record every
head's score (null = not scored). Reading validates everything a hand-edited or foreign file can get wrong
and raises `UserError` naming the field.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..core.files import atomic_write_text
from ..core.records import Record
from .layout import head_grid, to_keep_tensor

MASK_SCHEMA = "headprune.mask/1"
SCORES_SCHEMA = "headprune/scores-v1"


def _whole(value, what: str, *, minimum: int = 0) -> int:
    """`value` as an int, refusing bools, floats like 2.7 and strings."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{what} must be a whole number ≥ {minimum}, got {value!r}")
    return value


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such {what} file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{what} file {path} is not valid JSON: {exc}") from None


def _check_grid(layers: int, heads: int, model, model_id: str | None, recorded_id, check_model_id: bool, what: str):
    if model is None:
        return
    expected = head_grid(model)
    if (layers, heads) != expected:
        raise UserError(f"{what} is for a model with {layers} layers x {heads} heads, this model has "
                        f"{expected[0]} x {expected[1]}")
    current_id = model_id or getattr(model.config, "_name_or_path", None)
    if check_model_id and recorded_id and current_id and recorded_id != current_id:
        raise UserError(f"{what} was made for model {recorded_id!r}, not {current_id!r} "
                        "(load that model, or accept it for this one explicitly)")


# ------------------------------------------------------------------------------------------ masks
def mask_to_dict(keep, model=None, *, model_id: str | None = None, meta: dict[str, Any] | None = None) -> dict:
    """The JSON-ready mask record: schema, model id, shape, kept heads per layer and free-form meta."""
    keep = to_keep_tensor(keep, model) if model is not None else torch.as_tensor(keep).bool()
    if keep.dim() != 2:
        raise UserError(f"keep mask must be 2-D (num_layers, num_heads), got shape {tuple(keep.shape)}")
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
    return atomic_write_text(path, json.dumps(record, indent=2, default=_json_default) + "\n")


def mask_from_dict(record, model=None, *, model_id: str | None = None, check_model_id: bool = True) -> torch.Tensor:
    """Parse a mask record into a bool tensor (L, H); `UserError` on anything a user must fix."""
    if not isinstance(record, dict) or "kept_heads" not in record:
        raise UserError("not a headprune mask: expected a JSON object with 'kept_heads' (per layer)")
    schema = record.get("schema", MASK_SCHEMA)
    if schema != MASK_SCHEMA:
        raise UserError(f"unknown mask schema {schema!r}; this headprune reads {MASK_SCHEMA!r}")
    if "num_layers" not in record or "num_heads" not in record:
        raise UserError("mask is missing 'num_layers' / 'num_heads'")
    layers = _whole(record["num_layers"], "mask 'num_layers'", minimum=1)
    heads = _whole(record["num_heads"], "mask 'num_heads'", minimum=1)
    kept = record["kept_heads"]
    if not isinstance(kept, list) or len(kept) != layers:
        raise UserError(f"mask 'kept_heads' must list {layers} layers")
    _check_grid(layers, heads, model, model_id, record.get("model_id"), check_model_id, "mask")
    keep = torch.zeros(layers, heads, dtype=torch.bool)
    for layer, row in enumerate(kept):
        if not isinstance(row, list) or not all(
                isinstance(h, int) and not isinstance(h, bool) and 0 <= h < heads for h in row):
            raise UserError(f"mask layer {layer}: kept heads must be whole numbers in [0, {heads})")
        keep[layer, row] = True
    return keep


def read_mask(path: str | Path, model=None, *, model_id: str | None = None, check_model_id: bool = True) -> torch.Tensor:
    """Read a mask JSON file; `UserError` for a missing file, malformed JSON, wrong shape or model."""
    return mask_from_dict(_read_json(path, "mask"), model, model_id=model_id, check_model_id=check_model_id)


# ------------------------------------------------------------------------------------------ scores
@dataclass(frozen=True)
class ScoreRecord(Record):
    """A score map with what it means: metric, options, model and data it was computed on."""

    metric: str
    scores: torch.Tensor  # (L, H) float32, NaN = not scored
    options: dict = field(default_factory=dict)
    model_id: str | None = None
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        rows = [[None if math.isnan(v) else float(v) for v in row] for row in self.scores.tolist()]
        return {"schema": SCORES_SCHEMA, "metric": self.metric, "options": self.options, "model_id": self.model_id,
                "data": self.data, "num_layers": len(rows), "num_heads": len(rows[0]) if rows else 0,
                "scores": rows}


def write_scores(path: str | Path, record: ScoreRecord) -> Path:
    """Write a score record as JSON atomically (NaN → null)."""
    return atomic_write_text(path, json.dumps(record.to_dict(), indent=2, default=_json_default) + "\n")


def scores_from_dict(obj, model=None, *, model_id: str | None = None, check_model_id: bool = True) -> ScoreRecord:
    """Parse a score record; `UserError` naming what is wrong."""
    if not isinstance(obj, dict) or obj.get("schema") != SCORES_SCHEMA:
        raise UserError(f"not a headprune scores file: expected a JSON object with \"schema\": \"{SCORES_SCHEMA}\"")
    if not isinstance(obj.get("metric"), str) or not obj["metric"]:
        raise UserError("scores file has no 'metric'")
    layers = _whole(obj.get("num_layers"), "scores 'num_layers'", minimum=1)
    heads = _whole(obj.get("num_heads"), "scores 'num_heads'", minimum=1)
    rows = obj.get("scores")
    if not isinstance(rows, list) or len(rows) != layers or not all(
            isinstance(r, list) and len(r) == heads for r in rows):
        raise UserError(f"scores 'scores' must be {layers} rows of {heads} numbers (null = not scored)")
    values = []
    for row in rows:
        for v in row:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise UserError(f"scores hold a non-number: {v!r}")
            values.append(float("nan") if v is None else float(v))
    _check_grid(layers, heads, model, model_id, obj.get("model_id"), check_model_id, "scores file")
    options = obj.get("options") if isinstance(obj.get("options"), dict) else {}
    data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
    return ScoreRecord(obj["metric"], torch.tensor(values, dtype=torch.float32).view(layers, heads), options,
                       obj.get("model_id"), data)


def read_scores(path: str | Path, model=None, *, model_id: str | None = None, check_model_id: bool = True) -> ScoreRecord:
    """Read a scores JSON file written by `write_scores` (`headprune score --out`)."""
    return scores_from_dict(_read_json(path, "scores"), model, model_id=model_id, check_model_id=check_model_id)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
