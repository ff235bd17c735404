"""Deploying a workload's mask (over `headprune.deploy`): the nearest runtime-safe mask with its exact accuracy
cost, why there may be none, and the examples an ONNX export is checked on."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import UserError
from ..core.records import Record
from ..deploy import UniformMask, loads_in, round_to_uniform
from ..evaluation.metrics import Evaluation
from .workload import Workload

PARITY_EXAMPLES = 128  # the workload examples an ONNX export is checked on (its first, in whole batches)


@dataclass(frozen=True)
class RuntimeSafeMask(Record):
    """A mask that loads in every runtime, made from another by `round_to_uniform` (ties settled by `metric`'s
    scores), and the exact metrics of both masks on the workload's examples: after − before is what it costs."""

    uniform: UniformMask
    metric: str
    before: Evaluation
    after: Evaluation

    @property
    def keep(self) -> torch.Tensor:
        return self.uniform.keep


def runtime_safe_blocker(model, keep) -> str | None:
    """Why no mask near `keep` loads in every runtime — the first runtime refusing the shape `round_to_uniform`
    gives, with its reason (e.g. a BERT config cannot describe fewer heads) — or None when there is one."""
    try:
        rounded = round_to_uniform(keep, None, model)
    except UserError as exc:
        return str(exc)
    refused = [v for v in loads_in(model, rounded.keep).verdicts if not v.ok]
    return f"{refused[0].label}: {refused[0].reason}" if refused else None


def parity_batches(workload: Workload) -> tuple[list, str]:
    """(the workload's first batches holding `PARITY_EXAMPLES` examples or all it has, what they are) for an
    ONNX Runtime parity check."""
    batches, n = [], 0
    for batch in workload.batches:
        if n >= PARITY_EXAMPLES:
            break
        batches.append(batch)
        n += int(batch["input_ids"].shape[0])
    split = f" [{workload.split}]" if workload.split else ""
    return batches, f"the first {n} of {len(workload.df)} examples of {workload.data_spec}{split}"
