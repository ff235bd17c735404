"""`Record`: the base of headprune's typed results — a frozen dataclass that also reads as a mapping.

Results are dataclasses (fields with types and units in their docstrings), and `result["field"]`, `"field" in
result`, `dict(result)` and `result.to_dict()` (nested records, tensors as lists) work too, so printing a
result as JSON or showing it in a table needs no per-type code.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from pathlib import Path


class Record(Mapping):
    """Mixin for frozen dataclasses: mapping access to the fields (`_keys` decides which)."""

    def _keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str):
        if key in self._keys():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {key: jsonable(self[key]) for key in self}


def jsonable(value):
    """`value` with records, tensors, arrays, paths and non-finite floats turned into plain JSON values."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        return jsonable(value.tolist())
    return value
