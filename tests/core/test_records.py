"""core.records: a frozen dataclass Record reads as a mapping, and to_dict/jsonable give strict JSON values."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from headprune.core.records import Record, jsonable


@dataclasses.dataclass(frozen=True)
class Inner(Record):
    name: str
    value: float


@dataclasses.dataclass(frozen=True)
class Outer(Record):
    keep: torch.Tensor
    inner: Inner
    where: Path
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Partial(Record):
    shown: int
    hidden: int

    def _keys(self):
        return ["shown"]


def test_a_record_is_a_read_only_mapping_of_its_fields():
    rec = Inner("a", 1.5)
    assert list(rec) == ["name", "value"] and len(rec) == 2
    assert rec["name"] == "a" and "value" in rec and "nope" not in rec
    assert dict(rec) == {"name": "a", "value": 1.5} and rec.get("nope", 7) == 7
    with pytest.raises(KeyError):
        rec["nope"]
    with pytest.raises(KeyError):
        rec["replace"]  # methods are not fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.name = "b"


def test_replace_makes_a_new_record():
    rec = Inner("a", 1.5)
    other = rec.replace(value=2.0)
    assert other == Inner("a", 2.0) and rec.value == 1.5 and type(other) is Inner
    with pytest.raises(TypeError):
        rec.replace(missing=1)


def test_keys_decide_what_the_mapping_shows():
    rec = Partial(1, 2)
    assert dict(rec) == {"shown": 1} and rec.to_dict() == {"shown": 1} and "hidden" not in rec
    assert rec.hidden == 2
    with pytest.raises(KeyError):
        rec["hidden"]


def test_to_dict_is_plain_strict_json():
    rec = Outer(keep=torch.tensor([[True, False]]), inner=Inner("x", float("nan")), where=Path("/tmp/a b"),
                extra={1: (np.float32(0.5), np.array([np.inf, -np.inf])), "t": torch.tensor(3)})
    out = rec.to_dict()
    assert out == {"keep": [[True, False]], "inner": {"name": "x", "value": None}, "where": "/tmp/a b",
                   "extra": {"1": [0.5, ["inf", "-inf"]], "t": 3}}
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_jsonable_on_scalars_and_containers():
    assert jsonable(float("nan")) is None and jsonable(math.inf) == "inf" and jsonable(-math.inf) == "-inf"
    assert jsonable(np.float64("nan")) is None and jsonable(np.float32("-inf")) == "-inf"
    assert jsonable(torch.tensor([1.0, float("nan")])) == [1.0, None]
    assert jsonable(np.int64(3)) == 3 and type(jsonable(np.int64(3))) is int
    assert jsonable((1, [2, (3,)])) == [1, [2, [3]]]
    assert jsonable("text") == "text" and jsonable(None) is None and jsonable(True) is True
