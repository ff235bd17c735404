"""The Workbench's own records: a recovered mask with its metrics, and the key a mask is remembered by."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.records import Record, jsonable
from ..evaluation.examples import ExampleOutputs
from ..evaluation.metrics import Evaluation
from ..recovery.lsq import Recovery


@dataclass(frozen=True)
class RecoveredMask(Record):
    """A least-squares recovery of one mask and its metrics on the workload's examples."""

    recovery: Recovery
    result: Evaluation | None
    calibrated_on: str
    examples: ExampleOutputs | None = None

    @property
    def keep(self) -> torch.Tensor:
        return self.recovery.keep

    def to_dict(self) -> dict:
        """JSON values; the recovery as its mask, method, target, feed-forward flag and per-head gates (the weights
        are left out: they belong in a saved model, not a record)."""
        out = {key: jsonable(self[key]) for key in self if key != "recovery"}
        rec = self.recovery
        return {"recovery": {"keep": jsonable(rec.keep), **rec.summary(), "gates": jsonable(rec.gates)}, **out}


def mask_key(keep) -> tuple:
    """A mask as a hashable key (its flattened bools) for memos by mask."""
    return tuple(torch.as_tensor(keep).bool().flatten().tolist())
