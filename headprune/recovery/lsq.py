"""Retraining-free recovery after masking: least-squares refits of the attention (and feed-forward) output
projections.

Layer by layer, on calibration tokens (padding excluded), the masked attention sub-block's output plus its
residual, x + W·ctx(x) + b (x = the block input of the pruned model recovered so far, ctx = the kept heads'
context vectors), is fitted to a target. Two targets:

* "dense" (Kwon et al. 2022, *A Fast Post-Training Pruning Framework for Transformers*): the dense model's
  x' + W₀·ctx(x') + b₀, so each layer also corrects the error accumulated upstream.
* "local": the dense attention on the pruned model's own input, x + W₀·ctx_all(x) + b₀, so each layer only
  makes up for its own removed heads.

"auto" picks "dense" for post-norm blocks (BERT-style: the sum is normalised next, and correcting upstream
error helps) and "local" for pre-norm blocks (GPT-2, Llama, ViT), where the residual stream is never
normalised: asking attention to cancel upstream residual error there hurts (SmolLM2-135M, a third of the
heads removed: per-head scales towards "dense" raised the loss from 8.07 masked to 11.44, towards "local"
lowered it to 7.73; refitted weights 6.58 vs 5.88; dense 5.56). Both methods are closed-form ridge least
squares:

* "scales": one scale per kept head, W = W₀·diag(m), pulled towards 1 (Kwon et al. 2022, §4.3 "mask
  tuning"). A dozen numbers a layer.
* "weights": the kept heads' output-projection columns and the bias (when the projection has one) are
  refitted, pulled towards W₀, b₀. It also absorbs what a removed head contributed along directions the kept
  heads' contexts span, and its mean through the bias (cf. FLAP's bias compensation, An et al. 2024).
  d numbers per kept head dimension, so it wants more calibration tokens (a thousand examples or more).

`feed_forward` (post-norm blocks, "dense" target): after each layer's attention refit, its feed-forward output
projection and bias are refitted the same way, so that the sub-block's pre-norm sum h + W·a + b matches the
dense model's: the feed-forward weights absorb what attention left, before the norm (Kwon et al. 2022 tune the
masks of both sub-blocks by layer-wise least squares; here the feed-forward weights are refitted in full). On
`minilm-tweets`, 51 of 72 heads removed in `gradient` order, 2,048 calibration tweets, full validation / test
splits: −1.75 / −0.76 points vs dense → −1.41 / −0.46 (a script that refitted them after all attention
layers). (d_ff + 1)·d numbers a layer: the more calibration tokens the better.

The result is a `Recovery`: the mask plus, per layer, the new output-projection weight and bias (removed
heads' columns are zero). `recovery.applied(model)` evaluates it without copying the model (thread-scoped,
`headprune.model.intervene.replaced_projections`); `recovery.bake(model)` writes it into a copy, and
`prune(recovery.bake(model), recovery.keep)` gives the smaller recovered model.

The model may itself be physically pruned (a model fine-tuned after pruning, pruned further by
`headprune.search.compress`): `keep` names original head ids, heads already gone stay gone, and the "dense"
target is then the model's own output with every head it still stores.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
from torch import nn

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..core.types import (
    RECOVERY_METHODS,
    RECOVERY_TARGETS,
    RecoveryMethod,
    RecoveryTarget,
)
from ..model.adapters import adapter_for, in_out_weight
from ..model.forward import forward_backbone, model_device, real_tokens, to_device
from ..model.intervene import (
    ForwardStopped,
    capture_ffn_inputs,
    capture_out_inputs,
    layer_plan,
    private_copy,
    project,
    replaced_projections,
    replay_attention,
)
from ..model.layout import (
    ffn_projections,
    head_dim,
    head_grid,
    kept_mask,
    out_projections,
    present_heads,
    to_keep_tensor,
)
from .lsq_fit import DEFAULT_DAMPING, AttentionFit, FeedForwardFit


def _effective_keep(model, keep) -> torch.Tensor:
    """`keep` (L, H) restricted to the heads `model` still stores."""
    return to_keep_tensor(keep, model) & kept_mask(model)


def _stored(model, keep: torch.Tensor, layer: int) -> torch.Tensor:
    """(H_stored,) bool: which of `layer`'s stored heads (in storage order) `keep` keeps."""
    return keep[layer, present_heads(model)[layer]]


def _changed_layers(model, keep: torch.Tensor) -> list[bool]:
    """Per layer, whether `keep` removes a head the model still stores there."""
    return [not bool(_stored(model, keep, layer).all()) for layer in range(len(keep))]


@dataclasses.dataclass(frozen=True)
class Recovery:
    """A masked model's output projections after recovery.

    keep: (L, H) bool mask. method: "mask" (nothing refitted), "scales" or "weights". weights / biases: per
    layer the projection's new weight (its own layout, removed heads' input slices zero) and bias, or None
    where the layer is unchanged. gates: (L, H) float, each head's scale ("scales"; the mask elsewhere).
    target: what the layers were fitted to ("dense" or "local"; "" for plain masking). ffn_weights /
    ffn_biases: per layer the feed-forward output projection's new weight and bias, or None where unchanged
    (empty: the feed-forward sub-blocks were not refitted).
    """

    keep: torch.Tensor
    method: str
    weights: tuple[torch.Tensor | None, ...]
    biases: tuple[torch.Tensor | None, ...]
    gates: torch.Tensor
    target: str = ""
    ffn_weights: tuple[torch.Tensor | None, ...] = ()
    ffn_biases: tuple[torch.Tensor | None, ...] = ()

    @property
    def feed_forward(self) -> bool:
        """Whether the feed-forward output projections were refitted too."""
        return any(w is not None for w in self.ffn_weights)

    def summary(self) -> dict:
        """What was fitted, as JSON values: method, target, and whether the feed-forward outputs were too."""
        return {"method": self.method, "target": self.target, "feed_forward": self.feed_forward}

    @classmethod
    def of_mask(cls, model, keep) -> "Recovery":
        """Plain masking in this form: removed heads' input slices zeroed, nothing refitted."""
        keep = _effective_keep(model, keep)
        dh = head_dim(model)
        weights, biases = [], []
        for layer, (proj, changed) in enumerate(zip(out_projections(model), _changed_layers(model, keep))):
            if not changed:
                weights.append(None)
                biases.append(None)
                continue
            scale = _stored(model, keep, layer).repeat_interleave(dh).to(proj.weight)  # (in,)
            weights.append(in_out_weight(proj, in_out_weight(proj).detach() * scale[:, None]))
            biases.append(None if proj.bias is None else proj.bias.detach().clone())
        return cls(keep, "mask", tuple(weights), tuple(biases), keep.float())

    def _replaced(self, layer: int, weight: torch.Tensor, bias: torch.Tensor | None,
                  gates: torch.Tensor | None = None) -> "Recovery":
        weights, biases = list(self.weights), list(self.biases)
        weights[layer], biases[layer] = weight, bias
        return dataclasses.replace(self, weights=tuple(weights), biases=tuple(biases),
                                   gates=self.gates if gates is None else gates)

    def _replaced_ffn(self, layer: int, weight: torch.Tensor, bias: torch.Tensor | None) -> "Recovery":
        weights = list(self.ffn_weights) or [None] * len(self.weights)
        biases = list(self.ffn_biases) or [None] * len(self.weights)
        weights[layer], biases[layer] = weight, bias
        return dataclasses.replace(self, ffn_weights=tuple(weights), ffn_biases=tuple(biases))

    @staticmethod
    def _by_layer(weights: tuple, biases: tuple) -> dict[int, tuple]:
        """{layer: (weight, bias)} for the layers with a new weight."""
        return {layer: (w, b) for layer, (w, b) in enumerate(zip(weights, biases)) if w is not None}

    def _ffn_replaced(self) -> dict[int, tuple]:
        return self._by_layer(self.ffn_weights, self.ffn_biases)

    def _check(self, model) -> list[nn.Module]:
        projections = out_projections(model)
        if tuple(self.keep.shape) != head_grid(model):
            raise UserError(f"this recovery is for {tuple(self.keep.shape)} heads, the model has {head_grid(model)}")
        ffn = [out for _, out in ffn_projections(model)]
        if self.feed_forward and len(ffn) != len(projections):
            raise UserError("this recovery refits feed-forward sub-blocks this model's family does not name")
        pairs = [*zip(projections, self.weights), *((ffn[layer], w) for layer, (w, _) in self._ffn_replaced().items())]
        for proj, weight in pairs:
            if weight is not None and weight.shape != proj.weight.shape:
                raise UserError("this recovery was fitted on a model with other projection shapes")
        return projections

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Within the block, `model`'s output projections compute with the recovered weights (this thread
        only; the model object is unchanged). Equals `self.bake(model)`."""
        self._check(model)
        with replaced_projections(model, self._by_layer(self.weights, self.biases), self._ffn_replaced()):
            yield

    def bake(self, model: nn.Module) -> nn.Module:
        """A copy of `model` with the recovered output projections written in; `model` is unchanged."""
        self._check(model)
        baked = private_copy(model)
        ffn = ffn_projections(baked)
        written = [*zip(out_projections(baked), self.weights, self.biases),
                   *((ffn[layer][1], w, b) for layer, (w, b) in self._ffn_replaced().items())]
        with torch.no_grad():
            for proj, weight, bias in written:
                if weight is not None:
                    proj.weight.copy_(weight)
                    if bias is not None:
                        proj.bias.copy_(bias)
        return baked


def _run(model, batch: dict, start: int, start_input: torch.Tensor | None, end: int, recovery: Recovery | None,
         replay: torch.Tensor | None = None, ffn: bool = False,
         attention_only: bool = False) -> tuple[list, list, torch.Tensor | None, list | None]:
    """Run layers start..end-1 of `model` on `batch` (layer `start` fed `start_input`, None: the embeddings)
    under `recovery` (None: dense), layer `start`'s attention replayed from `replay` (its captured context)
    if given. Returns each run layer's block input (B, T, d) and raw (pre-gate) output-projection input
    (B, T, H*dh), the last one's output (None after the last layer, or with `attention_only`: the pass stops
    at the last layer's output projection), and with `ffn` each run layer's feed-forward (input (B, T, d),
    output-projection input (B, T, d_ff)) (else None)."""
    record: list[torch.Tensor] = []
    with contextlib.ExitStack() as stack:
        captured = stack.enter_context(capture_out_inputs(model, stop_after=end - 1 if attention_only else None))
        ffn_captured = stack.enter_context(capture_ffn_inputs(model)) if ffn else None
        stack.enter_context(layer_plan(model, start, start_input, record, end=end))
        if recovery is not None:
            stack.enter_context(recovery.applied(model))
        if replay is not None:
            stack.enter_context(replay_attention(model, start, replay))
        with contextlib.suppress(ForwardStopped):
            forward_backbone(model, batch)
    runs = end - start
    ffn_out = None if ffn_captured is None else [(h[0], a[0]) for h, a in ffn_captured[start:end]]
    return (record[:runs], [captured[layer][0] for layer in range(start, end)],
            record[runs] if len(record) > runs else None, ffn_out)


def _tokens(batch: dict, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each (B, T, k) tensor restricted to the batch's non-padding tokens, as (N, k)."""
    tokens = real_tokens(batch)
    return [t[tokens] for t in tensors]


def feed_forward_refit_applies(model, target: RecoveryTarget = "auto") -> bool:
    """Whether `lsq_recover(model, ..., target=target, feed_forward=True)` is possible: a post-norm family whose
    adapter names the feed-forward sub-block, and the "dense" target ("auto" picks it for post-norm)."""
    adapter = adapter_for(model)
    return adapter.post_norm and target in ("auto", "dense") and bool(ffn_projections(model))


def check_feed_forward(model, target: RecoveryTarget = "auto", option: str = "feed_forward") -> None:
    """`UserError` (naming `option`) unless `feed_forward_refit_applies(model, target)`."""
    if not feed_forward_refit_applies(model, target):
        raise UserError("refitting the feed-forward outputs needs a post-norm (BERT-style) model and the dense "
                        f"target; this is a {type(model).__name__} with the {target} target", option=option)


def _checked(model, method: str, target: str, damping: float | None, feed_forward: bool) -> tuple[str, float]:
    """(the target "auto" stands for, the damping) or a UserError naming the bad setting."""
    if method not in RECOVERY_METHODS:
        raise UserError(f"recovery method must be one of {', '.join(RECOVERY_METHODS)}, got {method!r}",
                        option="method")
    if target not in RECOVERY_TARGETS:
        raise UserError(f"recovery target must be one of {', '.join(RECOVERY_TARGETS)}, got {target!r}",
                        option="target")
    if feed_forward:
        check_feed_forward(model, target)
    if target == "auto":
        target = "dense" if adapter_for(model).post_norm else "local"
    damping = DEFAULT_DAMPING[method] if damping is None else damping
    if damping < 0:
        raise UserError(f"damping must be >= 0, got {damping}", option="damping")
    return target, damping


@torch.no_grad()
def lsq_recover(model, keep, calib_batches: list[dict], *, method: RecoveryMethod = "weights",
                target: RecoveryTarget = "auto", damping: float | None = None, feed_forward: bool = False,
                progress: Progress | None = None) -> Recovery:
    """Least-squares recovery of `model` masked by `keep` on `calib_batches` (see the module doc for
    `method`, `target` and `feed_forward`).

    `damping` (default 1e-2 for "scales", 1e-3 for "weights") scales the ridge term relative to the mean
    diagonal of the normal equations. Each layer runs once per batch from cached block inputs for the
    recovery so far, once more with its attention replayed to pass the refitted output on, and (target
    "dense") once for the dense model: two to three forward passes over the calibration data in all, without
    the task head (with `feed_forward`, one more replayed pass per layer). Memory: up to three (B, T, d)
    tensors per calibration batch, and the normal equations ((H·dh + 1)² + (H·dh + 1)·d numbers; with
    `feed_forward` also (d_ff + 1)² + (d_ff + 1)·d). Evaluate with `result.applied(model)`; save with
    `prune(result.bake(model), keep)`. `model` may be physically pruned (see the module doc).
    """
    target, damping = _checked(model, method, target, damping, feed_forward)
    keep = _effective_keep(model, keep)
    batches = [to_device(b, model_device(model)) for b in calib_batches]
    if not batches:
        raise UserError("least-squares recovery needs at least one calibration batch")
    result = dataclasses.replace(Recovery.of_mask(model, keep), method=method, target=target)
    layers = len(keep)
    changed = _changed_layers(model, keep)
    dense_in: list = [None] * len(batches)  # each batch's input to this layer in the dense model (None: embeddings)
    current_in: list = dense_in  # ... and under the recovery so far (the same until a layer changes)
    for layer in range(layers):
        changed_below = any(changed[:layer])
        fit = AttentionFit(model, layer, keep, method) if changed[layer] or changed_below else None
        ffn_fit = FeedForwardFit(model, layer) if fit is not None and feed_forward else None
        track_dense = target == "dense" or not changed_below  # "local" never needs the dense stream again
        next_dense, contexts, ffn_targets = [], [], []
        for i, batch in enumerate(batches):
            if changed_below:
                (x,), (ctx,), _, _ = _run(model, batch, layer, current_in[i], layer + 1, result, attention_only=True)
            if track_dense:
                (x_dense,), (ctx_dense,), following, dense_ffn = _run(model, batch, layer, dense_in[i], layer + 1,
                                                                      None, ffn=ffn_fit is not None)
                next_dense.append(following)
                if not changed_below:
                    x, ctx = x_dense, ctx_dense
            if fit is not None:
                fit.add(*_tokens(batch, *((x_dense, ctx_dense) if target == "dense" else (x, ctx)), x, ctx))
                contexts.append(ctx)
            if ffn_fit is not None:
                ffn_targets.append(ffn_fit.target(*_tokens(batch, *dense_ffn[0])))
        if fit is not None:
            solved = fit.solved(result.gates, damping)
            if solved is not None:
                result = result._replaced(layer, *solved)
            if ffn_fit is not None:
                for i, batch in enumerate(batches):
                    ffn_in = _run(model, batch, layer, current_in[i], layer + 1, result, replay=contexts[i],
                                  ffn=True)[3]
                    ffn_fit.add(ffn_targets[i], *_tokens(batch, *ffn_in[0]))
                result = result._replaced_ffn(layer, *ffn_fit.solved(damping))
            current_in = [_run(model, batch, layer, current_in[i], layer + 1, result, replay=contexts[i])[2]
                          for i, batch in enumerate(batches)]
        else:
            current_in = next_dense
        dense_in = next_dense
        report(progress, (layer + 1) / layers, f"layer {layer + 1}/{layers} refitted ({method}, {target} target"
                                               f"{', feed-forward too' if feed_forward else ''})")
    return result


@torch.no_grad()
def reconstruction_error(model, recovery: Recovery, calib_batches: list[dict]) -> torch.Tensor:
    """Per layer (L,): relative squared error of the attention sub-block output plus residual under
    `recovery` (`Recovery.of_mask(model, keep)` for plain masking) vs the dense model,
    ‖out − out_dense‖² / ‖W₀·ctx_dense‖², on the calibration tokens."""
    batches = [to_device(b, model_device(model)) for b in calib_batches]
    projections = recovery._check(model)
    last = len(projections) - 1
    errors = torch.zeros(len(projections), dtype=torch.float64)
    norms = torch.zeros(len(projections), dtype=torch.float64)
    for batch in batches:
        dense = _run(model, batch, 0, None, last + 1, None)
        current = _run(model, batch, 0, None, last + 1, recovery)
        for layer, proj in enumerate(projections):
            x_dense, ctx_dense, x, ctx = _tokens(batch, dense[0][layer], dense[1][layer], current[0][layer],
                                                 current[1][layer])
            dense_attn = project(proj, ctx_dense, proj.weight, None)
            refit = recovery.weights[layer] is not None
            out = x + project(proj, ctx, recovery.weights[layer] if refit else proj.weight,
                               recovery.biases[layer] if refit else proj.bias)
            target = x_dense + dense_attn + (0 if proj.bias is None else proj.bias)
            errors[layer] += float(((out - target) ** 2).sum())
            norms[layer] += float((dense_attn ** 2).sum())
    return (errors / norms.clamp(min=1e-12)).float()
