"""Layer-prefix cache: re-run a model from layer l on, reusing cached inputs of layer l.

A head in layer l only changes layers >= l, so after caching every layer's input hidden states under a
reference mask, any mask that agrees with the reference below layer l needs only layers >= l (plus the
embeddings and the task head, which the model's own forward still runs). One mechanism serves leave-one-out
ablation scores and the live what-if evaluator.

Within layer l itself the attention core (query/key/value projections, scores, softmax, weighted values)
does not change either, because its input did not: only the head gates in front of the output projection
did. With `contexts=True` the cache also keeps each layer's output-projection input (the per-head context
vectors, before the gates) and replays it at layer l (`replay_attention`) instead of recomputing it.

How: each transformer block gets (once) a forward wrapper that consults a `ContextVar` plan keyed by the
block module: skip (return the input unchanged, no compute), replace its input with a cached tensor, and/or
record its input. Attention modules get the same kind of wrapper for the replay. Without a plan the modules
run as usual, so other threads and callers are unaffected.
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
    if step.replace is not None:
        hidden = step.replace
        if args:
            args = (hidden, *args[1:])
        else:
            kwargs["hidden_states"] = hidden
    if step.record is not None:
        step.record.append(hidden.detach())
    if step.skip:
        return hidden
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
               record: list | None = None, end: int | None = None) -> Iterator[None]:
    """Within the block: layers < `start` and layers >= `end` (default: none) are skipped, layer `start` gets
    `start_input` (if given) as its input, and the inputs of the layers run are appended to `record` (if
    given), in order, followed by the input of layer `end` (the last run layer's output) when there is one.
    (With `end`, the model's own output is meaningless: read what was recorded.)"""
    blocks = _ensure_wrapped(model)
    end = len(blocks) if end is None else end
    if not 0 <= start < end <= len(blocks):
        raise ValueError(f"layers to run must satisfy 0 <= start < end <= {len(blocks)}, got {start}..{end}")
    plan = dict(_PLAN.get())
    for i, block in enumerate(blocks):
        if i == end:
            plan[block] = _Step(skip=True, record=record)
        elif i < start or i > end:
            plan[block] = _Step(skip=True)
        else:
            plan[block] = _Step(replace=start_input if i == start else None, record=record)
    token = _PLAN.set(plan)
    try:
        yield
    finally:
        _PLAN.reset(token)


_CAPTURE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("headprune_out_capture", default=None)
_REPLAY: contextvars.ContextVar[dict] = contextvars.ContextVar("headprune_attention_replay", default={})


def _capture_hook(module, args):
    target = _CAPTURE.get()
    if target is not None and module in target:
        target[module].append(args[0].detach())
    return None


@contextlib.contextmanager
def capture_out_inputs(model: nn.Module) -> Iterator[list[list[torch.Tensor]]]:
    """Within the block, each call of layer l's output projection appends its input (B, T, H_present*dh),
    *before* the head gates (the per-head context vectors), to `captured[l]` (the yielded list). One forward
    pre-hook per projection, run ahead of the gate hook and removed in `finally`; calls from other threads
    are not recorded."""
    projections = arch.out_projections(model)
    captured: list[list[torch.Tensor]] = [[] for _ in projections]
    handles = [proj.register_forward_pre_hook(_capture_hook, prepend=True) for proj in projections]
    token = _CAPTURE.set({proj: captured[layer] for layer, proj in enumerate(projections)})
    try:
        yield captured
    finally:
        _CAPTURE.reset(token)
        for handle in handles:
            handle.remove()


def _replay_forward(self, *args, **kwargs):
    """Attention forward that returns the replayed output when the current context asks for it."""
    cached = _REPLAY.get().get(self)
    if cached is None:
        return type(self).forward(self, *args, **kwargs)
    out_input, proj = cached
    return (out_input if proj is None else proj(out_input)), None


@contextlib.contextmanager
def replay_attention(model: nn.Module, layer: int, out_input: torch.Tensor) -> Iterator[None]:
    """Within the block, layer `layer`'s attention module skips its query/key/value projections and
    attention and returns what it would from `out_input`, the captured (ungated) input of its output
    projection (B, T, H_present*dh): the attention probabilities depend only on the layer's input, which a
    change of this layer's (or later layers') head gates does not touch. The gate hook still applies, so the
    result is exact (eval mode: attention dropout off). Only this thread (context) is affected.
    """
    module = arch.attention_modules(model)[layer]
    current = module.__dict__.get("forward")
    if current is None:  # wrap once; the wrapper falls through to the class forward without a replay
        module.forward = types.MethodType(_replay_forward, module)
    elif not (isinstance(current, types.MethodType) and current.__func__ is _replay_forward):
        yield  # a module with its own forward (a layer pruned to no heads): nothing to replay
        return
    proj = arch.out_projections(model)[layer] if arch.adapter_for(model).o_inside_attention else None
    token = _REPLAY.set({**_REPLAY.get(), module: (out_input, proj)})
    try:
        yield
    finally:
        _REPLAY.reset(token)


def _model_inputs(batch: dict) -> dict:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return inputs


def real_tokens(batch: dict) -> torch.Tensor:
    """(B, T) bool, True at real (non-padding) tokens."""
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


def forward_logits(model: nn.Module, batch: dict, **kwargs) -> torch.Tensor:
    """Logits of one batch, without the model's own loss and without building a KV cache."""
    extra = {"use_cache": False} if arch.task_of(model) == "causal-lm" else {}
    return model(**_model_inputs(batch), **extra, **kwargs).logits


def forward_backbone(model: nn.Module, batch: dict) -> None:
    """Run only the backbone (`model.base_model`: embeddings and blocks, no task head) on one batch, for
    what hooks and layer plans record; a language model's vocabulary projection can cost more than a block."""
    extra = {"use_cache": False} if arch.task_of(model) == "causal-lm" else {}
    model.base_model(**_model_inputs(batch), **extra)


class PrefixCache:
    """Every layer's input hidden states, per batch, under a reference keep mask; with `contexts=True` also
    every layer's output-projection input (`capture_out_inputs`), replayed at the first re-run layer.

    `max_bytes` bounds the memory: contexts are dropped first (`contexts_enabled` False), then the inputs
    (`enabled` False: every call falls back to a full forward pass, same results, no savings). `nbytes`
    reports what is held.
    """

    def __init__(self, model: nn.Module, batches: list[dict], keep=None, *, max_bytes: int = 2 << 30,
                 contexts: bool = False):
        self.model, self.batches = model, batches
        self.num_layers = arch.num_layers(model)
        hidden = model.config.hidden_size
        itemsize = next(model.parameters()).element_size()
        estimate = sum(b["input_ids"].numel() for b in batches) * hidden * itemsize * self.num_layers
        self.enabled = estimate <= max_bytes
        self.contexts_enabled = contexts and 2 * estimate <= max_bytes
        self.estimated_bytes = estimate * (2 if self.contexts_enabled else 1)
        self.keep = arch.to_keep_tensor(keep, model).clone()
        self.inputs: list[list[torch.Tensor]] = [[] for _ in batches]
        self.contexts: list[list[torch.Tensor | None]] = [[None] * self.num_layers for _ in batches]
        self.logits: list[torch.Tensor] = self.advance(self.keep, 0)

    @property
    def nbytes(self) -> int:
        """Bytes held by cached hidden states and contexts (0 when disabled)."""
        held = [t for per_batch in self.inputs for t in per_batch]
        held += [t for per_batch in self.contexts for t in per_batch if t is not None]
        return sum(t.numel() * t.element_size() for t in held)

    def lowest_changed_layer(self, keep) -> int | None:
        """The lowest layer where `keep` differs from the cached reference mask (None: identical)."""
        keep = arch.to_keep_tensor(keep, self.model)
        rows = (keep != self.keep).any(-1).nonzero()
        return int(rows[0]) if len(rows) else None

    @contextlib.contextmanager
    def _from_layer(self, index: int, start: int, record: list | None = None) -> Iterator[None]:
        """Within the block, batch `index` runs from layer `start`: the layers below are skipped, the cached
        input is fed, the cached attention core of `start` is replayed when held, and the inputs of layers
        >= start are appended to `record`."""
        start_input = self.inputs[index][start] if start > 0 else None
        context = self.contexts[index][start]
        with layer_plan(self.model, start, start_input, record):
            with replay_attention(self.model, start, context) if context is not None else contextlib.nullcontext():
                yield

    @torch.inference_mode()
    def logits_for(self, index: int, keep, start: int) -> torch.Tensor:
        """Logits of batch `index` under `keep`, which must equal the reference mask below layer `start`."""
        batch = self.batches[index]
        with masked(self.model, keep):
            if not self.enabled:
                return forward_logits(self.model, batch)
            with self._from_layer(index, start):
                return forward_logits(self.model, batch)

    @torch.inference_mode()
    def advance(self, keep, start: int | None = None, progress=None) -> list[torch.Tensor]:
        """Make `keep` the reference mask: re-run every batch from `start` (default: the lowest changed
        layer), refresh the cached inputs (and contexts) above it, and return the logits per batch."""
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
                    capture = capture_out_inputs(self.model) if self.contexts_enabled else contextlib.nullcontext()
                    with self._from_layer(index, start, record), capture as captured:
                        logits.append(forward_logits(self.model, batch))
                    self.inputs[index] = self.inputs[index][:start] + record
                    if captured is not None:
                        for layer in range(start, self.num_layers):
                            self.contexts[index][layer] = captured[layer][-1] if captured[layer] else None
                if progress is not None:
                    progress((index + 1) / len(self.batches), f"batch {index + 1}/{len(self.batches)}")
        self.keep, self.logits = keep, logits
        return logits
