"""Live what-if evaluation: exact metrics of a new mask in a fraction of a full pass, plus a Taylor estimate.

`LiveEvaluator` keeps, for the current (reference) mask, every layer's input hidden states per batch
(`PrefixCache`). A mask that first differs from the reference at layer l needs only layers >= l; the metrics
use `batch_metrics/accumulate/finalise`, so they equal a full `evaluate(model, batches, keep)` to float
tolerance.

Within layer l the attention core (q/k/v projections, scores, softmax, weighted values) does not change,
because its input did not: only the gates in front of the output projection did. The cache keeps each
layer's per-head context vectors (the output projection's input) and replays them (every family).
Families whose adapter declares a `classifier_tail` (BERT-like post-norm encoders whose classifier reads
position 0) get two further exact savings (`_PackedTail`):
* the output projection and the feed-forward block run on the real tokens only, packed (no padding);
* the classifier reads only position 0, so the last layer computes queries, the output projection and the
  feed-forward block at position 0 only (keys and values still at every position).

The estimate is first-order (Molchanov et al. 2017; Michel et al. 2019 use the same gate gradient):
Δloss ≈ Σ_h g_h (ξ_new,h − ξ_ref,h) with g = dL/dξ at the reference mask, from one backward pass.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..model.adapters import adapter_for
from ..model.forward import forward_logits, model_device, real_tokens, to_device
from ..model.intervene import gated, masked
from ..model.layout import (
    blocks,
    get_path,
    head_dim,
    is_pruned,
    task_of,
    to_keep_tensor,
)
from .examples import example_outputs
from .metrics import Evaluation, accumulate, batch_metrics, finalise, per_example_loss
from .prefix import PrefixCache


def _packed_tail_ok(model, batches: list[dict]) -> bool:
    """The family declares a classifier tail, every head is stored (not physically pruned), plain encoder
    blocks, and every row starts with a real token (right padding)."""
    adapter = adapter_for(model)
    if task_of(model) != "classification" or adapter.classifier_tail is None or is_pruned(model):
        return False
    if getattr(model.config, "add_cross_attention", False) or getattr(model.config, "is_decoder", False):
        return False
    return all(bool(real_tokens(b)[:, 0].all()) for b in batches)


class _PackedTail:
    """Runs layers >= start of a classifier from cached tensors, with the same modules (so the head gates
    apply) and `scaled_dot_product_attention`. The output projection and the feed-forward block run on the
    non-padding tokens only, packed (N, d): padding keys are masked out, so padding never reaches a real token,
    and the classifier reads position 0 only. Context vectors go to and come from the `PrefixCache` (padded
    (B, T, H*dh), written at the real tokens)."""

    def __init__(self, model):
        self.model = model
        self.adapter = adapter_for(model)
        self.tail = self.adapter.classifier_tail
        self.blocks = blocks(model)
        self.dh = head_dim(model)

    def context(self, layer: int, padded: torch.Tensor, tokens: torch.Tensor, *, first_only=False) -> torch.Tensor:
        """Per-head context vectors of `layer` (the output projection's input) from its input (B, T, d):
        packed over real tokens (N, H*dh), or (B, 1, H*dh) at position 0 with `first_only`.
        tokens: (B, T) bool, True = real token."""
        block, adapter, dh = self.blocks[layer], self.adapter, self.dh
        scaling = getattr(get_path(block, adapter.attention), "scaling", dh ** -0.5)

        def heads(x):  # (B, T', H*dh) -> (B, H, T', dh)
            return x.unflatten(-1, (-1, dh)).transpose(1, 2)

        q = heads(get_path(block, adapter.q)(padded[:, :1] if first_only else padded))
        k, v = heads(get_path(block, adapter.k)(padded)), heads(get_path(block, adapter.v)(padded))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=tokens[:, None, None, :], scale=scaling)
        context = context.transpose(1, 2).flatten(-2)  # (B, T', H*dh)
        return context if first_only else context[tokens]

    def finish(self, layer: int, residual: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Output projection (gated), residual + LayerNorm and feed-forward of `layer`, token-wise."""
        block = self.blocks[layer]
        attention_output = get_path(block, self.tail.attention_output)(context, residual)
        return self.tail.feed_forward(block, attention_output)

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """Task head on (B, 1, d) last-layer states at position 0; (B, C)."""
        return self.tail.logits(self.model, last_hidden)


class LiveEvaluator:
    """Exact metrics of any mask over fixed evaluation batches, re-running only the layers a change touches.

    One per browser session over a shared model (masks are per context). `examples` holds the per-example
    outputs (`ExampleOutputs`) of the last evaluation, from the same logits. `max_cache_bytes` bounds the
    cached activations; when they would not fit, `cache_enabled` is False and every evaluation is a full pass.
    The model must be in eval mode (a shared model is never switched; pass an eval-mode model).
    """

    def __init__(self, model, batches: list[dict], keep=None, *, max_cache_bytes: int = 1 << 30):
        if model.training:
            raise UserError("the live evaluator needs a model in eval mode (call model.eval() before sharing it)")
        self.model = model
        self.task = task_of(model)
        device = model_device(model)
        self.batches = [to_device(b, device) for b in batches]
        if not self.batches:
            raise UserError("the live evaluator needs at least one evaluation batch")
        self._tail = _PackedTail(model) if _packed_tail_ok(model, self.batches) else None
        start = time.perf_counter()
        self.cache = PrefixCache(model, self.batches, None, max_bytes=max_cache_bytes, contexts=True)
        self.dense = self._metrics(self.cache.logits).replace(seconds=time.perf_counter() - start)
        self._gradients: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}  # around -> (mask, g, loss)
        if keep is not None:
            self.evaluate(keep)

    # ------------------------------------------------------------------------------------ properties
    @property
    def keep(self) -> torch.Tensor:
        """The current reference mask (L, H), bool."""
        return self.cache.keep.clone()

    @property
    def cache_enabled(self) -> bool:
        return self.cache.enabled

    @property
    def cache_bytes(self) -> int:
        """Bytes of cached activations held now."""
        return self.cache.nbytes

    # ------------------------------------------------------------------------------------ evaluation
    def _metrics(self, logits: list[torch.Tensor]) -> Evaluation:
        """Metrics of the reference mask's logits; its per-example outputs are kept as `examples`."""
        total = None
        for batch, batch_logits in zip(self.batches, logits):
            total = accumulate(total, batch_metrics(batch_logits, batch["labels"], self.task, examples=True))
        self.examples = example_outputs(total)
        return finalise(total)

    def evaluate(self, keep, *, progress: Progress | None = None) -> Evaluation:
        """Exact metrics under `keep` (as `evaluate`, plus `rerun_from_layer`: the first layer re-run, None when
        nothing changed); `keep` becomes the new reference mask, and `examples` holds its per-example outputs."""
        start_time = time.perf_counter()
        keep = to_keep_tensor(keep, self.model)
        start = self.cache.lowest_changed_layer(keep)
        if start is None:
            logits = self.cache.logits
        elif self._tail is None or not self.cache.contexts_enabled:
            logits = self.cache.advance(keep, start, progress=progress)
        else:
            logits = self._advance_tail(keep, start, progress)
        return self._metrics(logits).replace(seconds=time.perf_counter() - start_time, rerun_from_layer=start)

    @torch.inference_mode()
    def _advance_tail(self, keep: torch.Tensor, start: int, progress: Progress | None) -> list[torch.Tensor]:
        """Fast path of `evaluate`: layers >= start from cached inputs/contexts, last layer at position 0."""
        logits = []
        with masked(self.model, keep):
            for index, batch in enumerate(self.batches):
                logits.append(self._tail_batch(index, batch, start))
                report(progress, (index + 1) / len(self.batches), f"batch {index + 1}/{len(self.batches)}")
        self.cache.keep, self.cache.logits = keep.clone(), logits
        return logits

    def _tail_batch(self, index: int, batch: dict, start: int) -> torch.Tensor:
        """Logits of one batch from layer `start` on, refreshing the cached inputs and contexts above it."""
        tail, last = self._tail, self.cache.num_layers - 1
        inputs, contexts = self.cache.inputs[index], self.cache.contexts[index]
        tokens = real_tokens(batch)  # (B, T)
        hidden = inputs[start][tokens]  # (N, d) packed real tokens
        for layer in range(start, last + 1):
            if layer > start:  # the new reference's input and contexts of this layer (padding keeps
                inputs[layer][tokens] = hidden  # stale values, which never reach a real token)
            if layer == last:
                if layer > start or contexts[layer] is None:
                    contexts[layer] = None  # only position 0 is computed below: nothing to keep
                    context = tail.context(layer, inputs[layer], tokens, first_only=True)  # (B, 1, H*dh)
                else:
                    context = contexts[layer][:, :1]
                return tail.logits(tail.finish(layer, inputs[layer][:, :1], context))  # (B, 1, d) -> (B, C)
            if layer > start or contexts[layer] is None:
                packed = tail.context(layer, inputs[layer], tokens)  # (N, H*dh)
                if contexts[layer] is None:
                    contexts[layer] = packed.new_zeros(*tokens.shape, packed.shape[-1])
                contexts[layer][tokens] = packed
            else:
                packed = contexts[layer][tokens]
            hidden = tail.finish(layer, hidden, packed)
        raise AssertionError("unreachable: the loop returns at the last layer")

    # ------------------------------------------------------------------------------------ estimate
    def gate_gradient(self, *, around: str = "reference") -> torch.Tensor:
        """dL/dξ (L, H) at the reference mask (or the dense model, `around="dense"`); one backward pass, cached."""
        return self._gradient_at(around)[1]

    def _gradient_at(self, around: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(mask, dL/dξ at it, loss at it), cached per linearisation point until that point moves."""
        if around not in ("reference", "dense"):
            raise UserError(f"around must be 'reference' or 'dense', got {around!r}")
        point = self.cache.keep if around == "reference" else torch.ones_like(self.cache.keep)
        cached = self._gradients.get(around)
        if cached is not None and torch.equal(cached[0], point):
            return cached
        model = self.model
        gates = point.float().to(model_device(model)).requires_grad_(True)
        total_loss, count, grad = 0.0, 0.0, torch.zeros_like(gates)
        with torch.enable_grad():
            for batch in self.batches:  # one graph per batch: gated() slices the gates on entry
                with gated(model, gates):
                    losses, items = per_example_loss(forward_logits(model, batch), batch["labels"], self.task)
                loss_sum = (losses * items.to(losses.device)).sum()  # summed over scored items, as `evaluate`
                grad += torch.autograd.grad(loss_sum, gates)[0]  # the shared model's .grad stays untouched
                total_loss, count = total_loss + float(loss_sum.detach()), count + float(items.sum())
        grad, total_loss = grad / count, total_loss / count
        self._gradients[around] = (point.clone(), grad.detach().cpu(), total_loss)
        return self._gradients[around]

    def estimate(self, keep, *, around: str = "reference") -> dict:
        """First-order estimate of the loss under `keep` (Molchanov et al. 2017; Michel et al. 2019):
        loss(point) + Σ_h g_h (keep_h − point_h), g = dL/dξ at `point`, the reference mask (it moves with every
        exact evaluation, costing one backward pass then) or, `around="dense"`, the dense model (computed once,
        so the estimate stays instant while the reference moves). dict(loss, delta_loss, reference_loss)."""
        keep = to_keep_tensor(keep, self.model)
        point, grad, loss = self._gradient_at(around)
        delta = float((grad * (keep.float() - point.float())).sum())
        return {"loss": loss + delta, "delta_loss": delta, "reference_loss": loss}
