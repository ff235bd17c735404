"""The intervention layer: the only code that reaches into a running model.

Every intervention is a context manager that changes what the *calling thread* (context) computes and nothing
else, so one cached model serves many browser sessions at once:

* `gated` / `masked`: scale each head's slice of the attention output projection's input by a gate (0 = the
  head is removed, exactly; a gate that requires grad gives dL/dξ, Michel et al. 2019);
* `replaced_projections`: the output projections compute with other weights and biases (least-squares
  recovery, without copying the model);
* `capture_out_inputs`: record each output projection's input before the gates (the heads' context vectors);
  `capture_ffn_inputs` the feed-forward sub-block's inputs (where the adapter names it);
* `layer_plan`: skip layers, feed a cached input to one, record the blocks' inputs (the prefix cache);
* `replay_attention`: a layer's attention module returns a captured context instead of recomputing it;
* `attention_view`: a private twin of the model (sharing every weight, eager attention, eval mode) whose
  forward returns attention probabilities, with the caller's interventions carried over;
* `inference_view`: the model itself when it is in eval mode, else such a twin in eval mode.

Mechanism: the instructions live in one `contextvars.ContextVar` keyed by module. While at least one context
of any thread is active on a model, one set of dispatchers is attached to it (forward pre-hook and forward hook
on each output and named feed-forward projection, a `forward` wrapper on each block and attention module);
they do nothing for modules the current context has no instruction for. Attaching and detaching are reference
counted under one lock, so concurrent first use attaches exactly once, and the last context to leave removes
every handle and attribute: a model outside any context carries nothing of headprune. Nothing here ever switches a model-wide
setting (attention implementation, train/eval mode): where a pass needs another setting, it runs on a twin.
Copies that leave this module (`private_copy`) are stripped of dispatchers.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import itertools
import threading
import types
import weakref
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from .adapters import adapter_for, in_out_weight
from .layout import (
    attention_modules,
    blocks,
    ffn_projections,
    head_grid,
    out_projections,
    present_heads,
    to_keep_tensor,
)


@dataclasses.dataclass(frozen=True)
class _Step:
    """A block's part in a layer plan: skip it, replace its input, record its input."""

    skip: bool = False
    replace: torch.Tensor | None = None
    record: list | None = None


@dataclasses.dataclass(frozen=True)
class _Instr:
    """What the current context asks of one module (all optional)."""

    gate: torch.Tensor | None = None  # output projection: (H_present,) or per example (B, H_present)
    capture: list | None = None  # output projection: its inputs before the gates are appended here
    stop: bool = False  # output projection: end the forward pass (`ForwardStopped`) once its input is captured
    weights: tuple | None = None  # output projection: (weight in its own layout, bias) to compute with
    step: _Step | None = None  # block
    replay: tuple | None = None  # attention module: (captured output-projection input, projection or None)


_STATE: contextvars.ContextVar[Mapping[nn.Module, _Instr]] = contextvars.ContextVar("headprune_state", default={})
_LOCK = threading.RLock()
_ATTACHED: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()  # model -> [count, undo]


# ------------------------------------------------------------------------------------------ dispatchers
def _proj_pre_hook(module: nn.Module, args: tuple):
    """Projection input (B, T, in): record it (capture), then, for an output projection (in = H_present*dh),
    scale head slices (gate)."""
    instr = _STATE.get().get(module)
    if instr is None or not args:
        return None
    x = args[0]
    if instr.capture is not None:
        instr.capture.append(x.detach())
    if instr.stop:
        raise ForwardStopped
    gate = instr.gate
    if gate is None or gate.shape[-1] == 0:
        return None
    n_heads = gate.shape[-1]
    heads = x.unflatten(-1, (n_heads, x.shape[-1] // n_heads))  # (B, T, H, dh)
    g = gate.to(dtype=x.dtype, device=x.device)
    g = g[:, None, :, None] if g.dim() == 2 else g[:, None]  # (B, 1, H, 1) or (H, 1)
    return (heads * g).flatten(-2), *args[1:]


def project(proj: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`proj`'s computation on x (..., in) with another weight (in the projection's layout) and bias."""
    out = F.linear(x, in_out_weight(proj, weight).T)
    return out if bias is None else out + bias


def _proj_hook(module: nn.Module, args: tuple, output):
    instr = _STATE.get().get(module)
    if instr is None or instr.weights is None:
        return None
    return project(module, args[0], *instr.weights)


def _block_forward(self, *args, **kwargs):
    """Block forward following the current context's layer plan for this block (if any)."""
    instr = _STATE.get().get(self)
    original = type(self).forward
    if instr is None or instr.step is None:
        return original(self, *args, **kwargs)
    step = instr.step
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


def _attention_forward(self, *args, **kwargs):
    """Attention forward that returns the replayed output when the current context asks for it."""
    instr = _STATE.get().get(self)
    if instr is None or instr.replay is None:
        return type(self).forward(self, *args, **kwargs)
    out_input, proj = instr.replay
    return (out_input if proj is None else proj(out_input)), None


_WRAPPERS = (_block_forward, _attention_forward)
_HOOKS = (_proj_pre_hook, _proj_hook)


def _attach(model: nn.Module) -> list:
    """Attach the dispatchers to `model`; returns what undoes it."""
    undo = []
    for proj in [*out_projections(model), *(p for pair in ffn_projections(model) for p in pair)]:
        undo.append(proj.register_forward_pre_hook(_proj_pre_hook, prepend=True))
        undo.append(proj.register_forward_hook(_proj_hook))
    for module, wrapper in itertools.chain(((b, _block_forward) for b in blocks(model)),
                                           ((a, _attention_forward) for a in attention_modules(model))):
        if "forward" not in module.__dict__:
            module.forward = types.MethodType(wrapper, module)
            undo.append(module)
    return undo


def _detach(undo: list) -> None:
    for item in undo:
        if isinstance(item, nn.Module):
            item.__dict__.pop("forward", None)
        else:
            item.remove()


def attached(model: nn.Module) -> bool:
    """True while some context (any thread) has interventions on `model` (tests: nothing is left behind)."""
    with _LOCK:
        return model in _ATTACHED


@contextlib.contextmanager
def _intervening(model: nn.Module, updates: Mapping[nn.Module, dict]) -> Iterator[None]:
    """Attach (reference counted) and set, for this context only, the instruction fields in `updates`."""
    with _LOCK:
        entry = _ATTACHED.get(model)
        if entry is None:
            entry = _ATTACHED[model] = [0, _attach(model)]
        entry[0] += 1
    state = dict(_STATE.get())
    for module, fields in updates.items():
        state[module] = dataclasses.replace(state.get(module, _Instr()), **fields)
    token = _STATE.set(state)
    try:
        yield
    finally:
        _STATE.reset(token)
        with _LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _ATTACHED[model]
                _detach(entry[1])


def active(model: nn.Module) -> bool:
    """True when the current context intervenes on any module of `model` (its outputs are not the model's)."""
    state = _STATE.get()
    return bool(state) and any(module in state for module in model.modules())


# ------------------------------------------------------------------------------------------ gates
@contextlib.contextmanager
def gated(model: nn.Module, gates: torch.Tensor) -> Iterator[None]:
    """Run `model` with head gates: `gates` is (L, H) or per example (L, B, H), over original head ids.

    Heads physically pruned away are simply absent. Gates compose multiplicatively with any outer
    `gated`/`masked` block on the same model. Only the current thread (context) is affected.
    """
    expected = head_grid(model)
    if gates.dim() not in (2, 3) or (gates.shape[0], gates.shape[-1]) != expected:
        raise UserError(f"gates must be shaped (L, H) or (L, B, H) with (L, H) = {expected}, got {tuple(gates.shape)}")
    present = present_heads(model)
    state = _STATE.get()
    updates = {}
    for layer, proj in enumerate(out_projections(model)):
        gate = gates[layer][..., present[layer]]
        outer = state.get(proj, _Instr()).gate
        updates[proj] = {"gate": gate if outer is None else outer * gate}
    with _intervening(model, updates):
        yield


@contextlib.contextmanager
def masked(model: nn.Module, keep) -> Iterator[None]:
    """Inside the block, heads with keep=False contribute nothing to `model`'s attention output.

    keep: bool tensor / numpy array / nested list shaped `head_grid(model)`, True = keep. Exact for forward
    and backward, any attention backend; the model object is never modified.
    """
    keep = to_keep_tensor(keep, model)
    with gated(model, keep.float()):
        yield


# ------------------------------------------------------------------------------------------ weights
@contextlib.contextmanager
def replaced_projections(model: nn.Module, weights: Mapping[int, tuple],
                         ffn_weights: Mapping[int, tuple] | None = None) -> Iterator[None]:
    """Within the block, layer l's output projection computes with `weights[l] = (weight, bias)` (weight in
    the projection's own layout) instead of its own, and its feed-forward output projection with
    `ffn_weights[l]`; this thread only."""
    projections = out_projections(model)
    updates = {projections[layer]: {"weights": pair} for layer, pair in weights.items()}
    if ffn_weights:
        ffn = ffn_projections(model)
        updates.update({ffn[layer][1]: {"weights": pair} for layer, pair in ffn_weights.items()})
    with _intervening(model, updates):
        yield


# ------------------------------------------------------------------------------------------ capture
class ForwardStopped(Exception):
    """Raised inside a forward pass by `capture_out_inputs(..., stop_after=l)`: what was wanted is captured."""


@contextlib.contextmanager
def capture_out_inputs(model: nn.Module, stop_after: int | None = None) -> Iterator[list[list[torch.Tensor]]]:
    """Within the block, each call of layer l's output projection appends its input (B, T, H_present*dh),
    *before* the head gates (the per-head context vectors), to `captured[l]` (the yielded list), this thread
    only. With `stop_after`, the pass ends after that layer's capture: `ForwardStopped` (catch it)."""
    projections = out_projections(model)
    captured: list[list[torch.Tensor]] = [[] for _ in projections]
    with _intervening(model, {proj: {"capture": captured[layer], "stop": layer == stop_after}
                              for layer, proj in enumerate(projections)}):
        yield captured


@contextlib.contextmanager
def capture_ffn_inputs(model: nn.Module) -> Iterator[list[tuple[list[torch.Tensor], list[torch.Tensor]]]]:
    """Within the block, each pass through layer l's feed-forward sub-block appends its input (B, T, d), the
    residual its output is added to, to `captured[l][0]` and its output projection's input (B, T, d_ff) to
    `captured[l][1]`; this thread only. The model's family must name the sub-block (`Adapter.ffn_in`)."""
    pairs = ffn_projections(model)
    if not pairs:
        raise UserError(f"headprune does not know where {type(model).__name__}'s feed-forward sub-block is")
    captured: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in pairs]
    updates = {}
    for layer, (first, out) in enumerate(pairs):
        updates[first] = {"capture": captured[layer][0]}
        updates[out] = {"capture": captured[layer][1]}
    with _intervening(model, updates):
        yield captured


# ------------------------------------------------------------------------------------------ layer plans
@contextlib.contextmanager
def layer_plan(model: nn.Module, start: int = 0, start_input: torch.Tensor | None = None,
               record: list | None = None, end: int | None = None) -> Iterator[None]:
    """Within the block: layers < `start` and layers >= `end` (default: none) are skipped, layer `start` gets
    `start_input` (if given) as its input, and the inputs of the layers run are appended to `record` (if
    given), in order, followed by the input of layer `end` (the last run layer's output) when there is one.
    (With `end`, the model's own output is meaningless: read what was recorded.)"""
    all_blocks = blocks(model)
    end = len(all_blocks) if end is None else end
    if not 0 <= start < end <= len(all_blocks):
        raise UserError(f"layers to run must satisfy 0 <= start < end <= {len(all_blocks)}, got {start}..{end}")
    updates = {}
    for i, block in enumerate(all_blocks):
        if i == end:
            step = _Step(skip=True, record=record)
        elif i < start or i > end:
            step = _Step(skip=True)
        else:
            step = _Step(replace=start_input if i == start else None, record=record)
        updates[block] = {"step": step}
    with _intervening(model, updates):
        yield


@contextlib.contextmanager
def replay_attention(model: nn.Module, layer: int, out_input: torch.Tensor) -> Iterator[None]:
    """Within the block, layer `layer`'s attention module skips its query/key/value projections and
    attention and returns what it would from `out_input`, the captured (ungated) input of its output
    projection (B, T, H_present*dh): the attention probabilities depend only on the layer's input, which a
    change of this layer's (or later layers') head gates does not touch. The gates still apply, so the
    result is exact (eval mode: attention dropout off). Only this thread (context) is affected."""
    module = attention_modules(model)[layer]
    proj = out_projections(model)[layer] if adapter_for(model).o_inside_attention else None
    with _intervening(model, {module: {"replay": (out_input, proj)}}):
        yield


# ------------------------------------------------------------------------------------------ copies
def _strip(model: nn.Module) -> nn.Module:
    """Remove headprune dispatchers a deep copy may have carried over from its original."""
    for module in model.modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, fn in hooks.items() if fn in _HOOKS]:
                del hooks[key]
                for flags in (module._forward_pre_hooks_with_kwargs, module._forward_hooks_with_kwargs,
                              module._forward_hooks_always_called):
                    flags.pop(key, None)
        current = module.__dict__.get("forward")
        if isinstance(current, types.MethodType) and current.__func__ in _WRAPPERS:
            del module.__dict__["forward"]
    return model


def private_copy(model: nn.Module, *, share_weights: bool = False) -> nn.Module:
    """A deep copy of `model` for one caller to change (prune, fine-tune, bake weights into): no headprune
    dispatchers, and with `share_weights` the very same parameter and buffer tensors (a new module
    structure and config over them: cheap, and changes of its structure or config stay private)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())} if share_weights else {}
    with _LOCK:  # no attach/detach mid-copy: the hook tables are read consistently
        twin = copy.deepcopy(model, memo)
    return _strip(twin)


_TWINS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _weights_token(model: nn.Module) -> tuple:
    return tuple((id(t), t.data_ptr()) for t in itertools.chain(model.parameters(), model.buffers()))


def _twin(model: nn.Module, kind: str) -> nn.Module:
    """A cached weight-sharing twin of `model`: kind "eval" (eval mode) or "eager" (eval mode, eager attention)."""
    token = _weights_token(model)
    with _LOCK:
        cached = _TWINS.setdefault(model, {}).get(kind)
        if cached is not None and cached[0] == token:
            return cached[1]
    twin = private_copy(model, share_weights=True).eval()
    if kind == "eager" and twin.config._attn_implementation != "eager":
        twin.set_attn_implementation("eager")
        if twin.config._attn_implementation != "eager":
            raise UserError(f"{type(model).__name__} cannot compute attention weights (no eager attention); "
                            "load it with attn_implementation='eager'")
    with _LOCK:
        _TWINS[model][kind] = (token, twin)
    return twin


@contextlib.contextmanager
def _carried_over(model: nn.Module, twin: nn.Module) -> Iterator[None]:
    """The current context's instructions for `model`'s modules, applied to the same modules of `twin`."""
    state = _STATE.get()
    names = {module: name for name, module in model.named_modules()} if state else {}
    twin_modules = dict(twin.named_modules()) if names else {}
    updates = {}
    for module, instr in state.items():
        if module in names:
            fields = {f.name: getattr(instr, f.name) for f in dataclasses.fields(instr)}
            if instr.replay is not None and instr.replay[1] is not None:
                fields["replay"] = (instr.replay[0], twin_modules[names[instr.replay[1]]])
            updates[twin_modules[names[module]]] = fields
    if not updates:
        yield
        return
    with _intervening(twin, updates):
        yield


@contextlib.contextmanager
def attention_view(model: nn.Module) -> Iterator[nn.Module]:
    """Yield a twin of `model` (the same weights, eager attention, eval mode; `model` is untouched) on which
    `twin(..., output_attentions=True)` returns attention probabilities; the current context's interventions
    on `model` (masks, recovered weights) apply to it too."""
    twin = _twin(model, "eager")
    with _carried_over(model, twin):
        yield twin


@contextlib.contextmanager
def inference_view(model: nn.Module) -> Iterator[nn.Module]:
    """Yield `model` when it is in eval mode, else a twin in eval mode sharing its weights (dropout off)
    with the current context's interventions carried over: evaluation never flips a shared model's mode."""
    if not model.training:
        yield model
        return
    twin = _twin(model, "eval")
    with _carried_over(model, twin):
        yield twin
