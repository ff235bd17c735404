"""Layer-prefix cache: re-run a model from layer l on, reusing cached inputs of layer l.

A head in layer l only changes layers >= l, so after caching every layer's input hidden states under a
reference mask, any mask that agrees with the reference below layer l needs only layers >= l (plus the
embeddings and the task head, which the model's own forward still runs). One mechanism serves leave-one-out
ablation scores and the live what-if evaluator.

How: each transformer block gets (once) a forward wrapper that consults a `ContextVar` plan keyed by the
block module: skip (return the input unchanged, no compute), replace its input with a cached tensor, and/or
record its input. Without a plan the block runs as usual, so other threads and callers are unaffected.
"""
from __future__ import annotations

import contextlib
import contextvars
import types
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from . import arch
from .mask import masked


@dataclass
class _Step:
    skip: bool = False
    replace: torch.Tensor | None = None
    record: list | None = None


_PLAN: contextvars.ContextVar[dict[nn.Module, _Step]] = contextvars.ContextVar("headprune_layer_plan", default={})


def _planned_forward(self, *args, **kwargs):
    """Block forward that follows the active plan for this block (if any)."""
    step = _PLAN.get().get(self)
    original = type(self).forward
    if step is None:
        return original(self, *args, **kwargs)
    hidden = args[0] if args else kwargs["hidden_states"]
    if step.skip:
        return hidden
    if step.replace is not None:
        hidden = step.replace
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
    if step.record is not None:
        step.record.append(hidden.detach())
    return original(self, *args, **kwargs)


def _ensure_wrapped(model: nn.Module) -> list[nn.Module]:
    blocks = arch.blocks(model)
    for block in blocks:
        current = block.__dict__.get("forward")
        if not (isinstance(current, types.MethodType) and current.__func__ is _planned_forward):
            block.forward = types.MethodType(_planned_forward, block)
    return blocks


@contextlib.contextmanager
def layer_plan(model: nn.Module, start: int = 0, start_input: torch.Tensor | None = None,
               record: list | None = None) -> Iterator[None]:
    """Within the block: layers < `start` are skipped, layer `start` gets `start_input` (if given) as its
    input, and the inputs of layers >= `start` are appended to `record` (if given), in order."""
    blocks = _ensure_wrapped(model)
    if not 0 <= start < len(blocks):
        raise ValueError(f"start layer must be in [0, {len(blocks)}), got {start}")
    plan = dict(_PLAN.get())
    for i, block in enumerate(blocks):
        if i < start:
            plan[block] = _Step(skip=True)
        else:
            plan[block] = _Step(replace=start_input if i == start else None, record=record)
    token = _PLAN.set(plan)
    try:
        yield
    finally:
        _PLAN.reset(token)


def _model_inputs(batch: dict) -> dict:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return inputs


def forward_logits(model: nn.Module, batch: dict, **kwargs) -> torch.Tensor:
    """Logits of one batch, without the model's own loss and without building a KV cache."""
    extra = {"use_cache": False} if arch.task_of(model) == "causal-lm" else {}
    return model(**_model_inputs(batch), **extra, **kwargs).logits


class PrefixCache:
    """Every layer's input hidden states, per batch, under a reference keep mask.

    `max_bytes` bounds the memory; when the cache would not fit, `enabled` is False and every call falls
    back to a full forward pass (same results, no savings). `nbytes` reports what is held.
    """

    def __init__(self, model: nn.Module, batches: list[dict], keep=None, *, max_bytes: int = 2 << 30):
        self.model, self.batches = model, batches
        self.num_layers = arch.num_layers(model)
        hidden = model.config.hidden_size
        itemsize = next(model.parameters()).element_size()
        estimate = sum(b["input_ids"].numel() for b in batches) * hidden * itemsize * self.num_layers
        self.enabled = estimate <= max_bytes
        self.estimated_bytes = estimate
        self.keep = arch.to_keep_tensor(keep, model).clone()
        self.inputs: list[list[torch.Tensor]] = [[] for _ in batches]
        self.logits: list[torch.Tensor] = self.advance(self.keep, 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by cached hidden states (0 when disabled)."""
        return sum(t.numel() * t.element_size() for per_batch in self.inputs for t in per_batch)

    def lowest_changed_layer(self, keep) -> int | None:
        """The lowest layer where `keep` differs from the cached reference mask (None: identical)."""
        keep = arch.to_keep_tensor(keep, self.model)
        rows = (keep != self.keep).any(-1).nonzero()
        return int(rows[0]) if len(rows) else None

    @torch.inference_mode()
    def logits_for(self, index: int, keep, start: int) -> torch.Tensor:
        """Logits of batch `index` under `keep`, which must equal the reference mask below layer `start`."""
        batch = self.batches[index]
        with masked(self.model, keep):
            if not self.enabled or start == 0:
                return forward_logits(self.model, batch)
            with layer_plan(self.model, start, self.inputs[index][start]):
                return forward_logits(self.model, batch)

    @torch.inference_mode()
    def advance(self, keep, start: int | None = None, progress=None) -> list[torch.Tensor]:
        """Make `keep` the reference mask: re-run every batch from `start` (default: the lowest changed
        layer), refresh the cached inputs above it, and return the logits per batch."""
        keep = arch.to_keep_tensor(keep, self.model).clone()
        if start is None:
            start = self.lowest_changed_layer(keep)
            if start is None and self.logits:
                return self.logits
            start = start or 0
        logits = []
        with masked(self.model, keep):
            for index, batch in enumerate(self.batches):
                if not self.enabled:
                    logits.append(forward_logits(self.model, batch))
                else:
                    record: list[torch.Tensor] = []
                    start_input = self.inputs[index][start] if start > 0 else None
                    with layer_plan(self.model, start, start_input, record):
                        logits.append(forward_logits(self.model, batch))
                    self.inputs[index] = self.inputs[index][:start] + record
                if progress is not None:
                    progress((index + 1) / len(self.batches), f"batch {index + 1}/{len(self.batches)}")
        self.keep, self.logits = keep, logits
        return logits
