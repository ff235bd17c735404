"""Layer-prefix cache: re-run a model from layer l on, reusing cached inputs of layer l.

A head in layer l only changes layers >= l, so after caching every layer's input hidden states under a
reference mask, any mask that agrees with the reference below layer l needs only layers >= l (plus the
embeddings and the task head, which the model's own forward still runs). One mechanism serves leave-one-out
ablation scores and the live what-if evaluator.

Within layer l itself the attention core (query/key/value projections, scores, softmax, weighted values)
does not change either, because its input did not: only the head gates in front of the output projection
did. With `contexts=True` the cache also keeps each layer's output-projection input (the per-head context
vectors, before the gates) and replays it at layer l (`replay_attention`) instead of recomputing it.
The layer plans, captures and replays are `headprune.model.intervene` contexts: other threads are unaffected.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..core.progress import Progress, report
from ..model.forward import forward_logits
from ..model.intervene import capture_out_inputs, layer_plan, masked, replay_attention
from ..model.layout import num_layers, to_keep_tensor


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
        self.num_layers = num_layers(model)
        hidden = model.config.hidden_size
        itemsize = next(model.parameters()).element_size()
        estimate = sum(b["input_ids"].numel() for b in batches) * hidden * itemsize * self.num_layers
        self.enabled = estimate <= max_bytes
        self.contexts_enabled = contexts and 2 * estimate <= max_bytes
        self.estimated_bytes = estimate * (2 if self.contexts_enabled else 1)
        self.keep = to_keep_tensor(keep, model).clone()
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
        keep = to_keep_tensor(keep, self.model)
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
    def advance(self, keep, start: int | None = None, progress: Progress | None = None) -> list[torch.Tensor]:
        """Make `keep` the reference mask: re-run every batch from `start` (default: the lowest changed
        layer), refresh the cached inputs (and contexts) above it, and return the logits per batch."""
        keep = to_keep_tensor(keep, self.model).clone()
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
                report(progress, (index + 1) / len(self.batches), f"batch {index + 1}/{len(self.batches)}")
        self.keep, self.logits = keep, logits
        return logits
