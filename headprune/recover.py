"""Retraining-free recovery after masking: least-squares rescaling of the kept heads ("mask tuning",
Kwon et al. 2022, *A Fast Post-Training Pruning Framework for Transformers*, §4.3).

Layer by layer (upstream layers already masked and rescaled, as in Kwon), find one scale m_h per kept head
so that the layer's attention sub-block output plus its residual, x + Σ_h m_h·W_o,h·ctx_h(x) + b_o (x = the
pruned model's block input), matches the dense model's x' + W_o·ctx(x') + b_o on calibration tokens (padding
excluded). It is linear in m: ridge least squares (G + λI) m = Aᵀb + λ·1, λ = damping · mean(diag G),
pulling the scales towards 1 (unchanged). The result is float gates (L, H) (0 = removed head) that
`headprune.mask.gated(model, gates)` evaluates without copying the model; `bake_gates` writes them into
the output projections, and `prune(bake_gates(model, gates), keep)` gives the smaller recovered model (prune
by the mask, not by the gates' sign: a kept head's scale may come out negative).
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
from typing import Callable

import torch
from torch import nn

from . import arch
from .evaluate import model_device, to_device
from .mask import gated
from .prefix import forward_logits, layer_plan

Progress = Callable[[float, str], None]
_RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("headprune_recover_record", default=None)


def _record_hook(module: nn.Module, args: tuple) -> None:
    """Keep the raw (pre-gate) input of an output projection when this context asked for it."""
    record = _RECORD.get()
    if record is not None and module in record:
        record[module].append(args[0].detach())


@contextlib.contextmanager
def _recording(model) -> dict:
    """Within the block, every forward in this context appends each output projection's raw input."""
    projections = arch.out_projections(model)
    handles = [p.register_forward_pre_hook(_record_hook, prepend=True) for p in projections]  # before the gate
    record = {p: [] for p in projections}
    token = _RECORD.set(record)
    try:
        yield record
    finally:
        _RECORD.reset(token)
        for handle in handles:
            handle.remove()


def _check_model(model) -> None:
    if getattr(model.config, "headprune_heads", None) is not None:
        raise ValueError("least-squares recovery needs the unpruned model: pass the original, then prune the result")


@torch.no_grad()
def _activations(model, batches: list[dict], gates: torch.Tensor) -> tuple[list, list]:
    """Per layer: block inputs (N, d) and raw head contexts (N, H*dh) on non-padding tokens, under `gates`."""
    layers = arch.num_layers(model)
    inputs, contexts = [[] for _ in range(layers)], [[] for _ in range(layers)]
    with _recording(model) as record, gated(model, gates):
        for batch in batches:
            tokens = batch["attention_mask"].bool() if "attention_mask" in batch else None
            blocks_in: list[torch.Tensor] = []
            with layer_plan(model, 0, None, blocks_in):
                forward_logits(model, batch)
            for layer, proj in enumerate(arch.out_projections(model)):
                ctx = record[proj].pop()
                x = blocks_in[layer]
                if tokens is not None:
                    x, ctx = x[tokens], ctx[tokens]  # (N, d), (N, H*dh)
                inputs[layer].append(x.reshape(-1, x.shape[-1]))
                contexts[layer].append(ctx.reshape(-1, ctx.shape[-1]))
    return [torch.cat(x) for x in inputs], [torch.cat(c) for c in contexts]


def _head_outputs(proj: nn.Module, ctx: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's term of the output projection, (N, H, d), and the projection bias (d,)."""
    if isinstance(proj, nn.Linear):
        weight = proj.weight.T  # (H*dh, d)
    else:  # GPT-2 Conv1D stores (in, out)
        weight = proj.weight
    dh = weight.shape[0] // heads
    per_head = torch.einsum("nhk,hkd->nhd", ctx.unflatten(-1, (heads, dh)), weight.unflatten(0, (heads, dh)))
    bias = proj.bias if proj.bias is not None else torch.zeros(weight.shape[1], device=ctx.device)
    return per_head, bias


def _layer_error(model, layer, dense, current, gates) -> float:
    """Relative squared error of layer `layer`'s attention + residual output vs dense (over dense ‖attn‖²)."""
    proj = arch.out_projections(model)[layer]
    heads = arch.num_heads(model)
    dense_terms, bias = _head_outputs(proj, dense[1][layer], heads)
    target = dense[0][layer] + dense_terms.sum(1) + bias  # (N, d)
    terms, _ = _head_outputs(proj, current[1][layer], heads)
    output = current[0][layer] + (terms * gates[layer].to(terms)[None, :, None]).sum(1) + bias
    return float(((output - target) ** 2).sum() / (dense_terms.sum(1) ** 2).sum().clamp(min=1e-12))


@torch.no_grad()
def reconstruction_error(model, gates: torch.Tensor, calib_batches: list[dict]) -> torch.Tensor:
    """Per layer (L,): relative squared error of the attention sub-block output (plus residual) under `gates`
    vs the dense model, ‖out − out_dense‖² / ‖attn_dense‖², on the calibration tokens."""
    _check_model(model)
    batches = [to_device(b, model_device(model)) for b in calib_batches]
    grid = arch.head_grid(model)
    gates = torch.as_tensor(gates, dtype=torch.float32).reshape(grid)
    dense = _activations(model, batches, torch.ones(grid))
    current = _activations(model, batches, gates)
    return torch.tensor([_layer_error(model, l, dense, current, gates) for l in range(grid[0])])


@torch.no_grad()
def lsq_gates(model, keep, calib_batches: list[dict], *, damping: float = 1e-2,
              progress: Progress | None = None) -> torch.Tensor:
    """Float gates (L, H): 0 for removed heads, a least-squares scale for kept ones (see the module doc).

    One forward pass over `calib_batches` for the dense targets, then one per layer. Evaluate with
    `gated(model, gates)`; bake with `bake_gates`.
    """
    _check_model(model)
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    keep = arch.to_keep_tensor(keep, model)
    batches = [to_device(b, model_device(model)) for b in calib_batches]
    if not batches:
        raise ValueError("least-squares recovery needs at least one calibration batch")
    layers, heads = keep.shape
    gates = keep.float()
    dense = _activations(model, batches, torch.ones(layers, heads))
    projections = arch.out_projections(model)
    for layer in range(layers):
        kept = keep[layer].nonzero().flatten()
        if len(kept) and not bool(keep[layer].all() and (gates[:layer] == 1).all()):
            current = _activations(model, batches, gates)
            dense_terms, bias = _head_outputs(projections[layer], dense[1][layer], heads)
            target = dense[0][layer] + dense_terms.sum(1) + bias  # (N, d)
            terms, _ = _head_outputs(projections[layer], current[1][layer], heads)
            a = terms[:, kept].double()  # (N, k, d)
            b = (target - current[0][layer] - bias).double()  # (N, d)
            gram = torch.einsum("nkd,njd->kj", a, a)  # (k, k)
            rhs = torch.einsum("nkd,nd->k", a, b)  # (k,)
            lam = damping * float(gram.diagonal().mean().clamp(min=1e-12))
            eye = torch.eye(len(kept), dtype=gram.dtype)
            solution = torch.linalg.solve(gram + lam * eye, rhs + lam * torch.ones(len(kept), dtype=gram.dtype))
            gates[layer, kept] = solution.float().cpu()
        if progress is not None:
            progress((layer + 1) / layers, f"layer {layer + 1}/{layers} rescaled")
    return gates


def bake_gates(model, gates: torch.Tensor) -> nn.Module:
    """A copy of `model` whose output-projection input slices (columns of a Linear, rows of a GPT-2 Conv1D)
    are multiplied by the gates (L, H); `model` is unchanged. Equals `gated(model, gates)`."""
    grid = arch.head_grid(model)
    gates = torch.as_tensor(gates, dtype=torch.float32)
    if tuple(gates.shape) != grid:
        raise ValueError(f"gates must be shaped {grid}, got {tuple(gates.shape)}")
    baked = copy.deepcopy(model)
    dh = arch.head_dim(model)
    with torch.no_grad():
        for layer, (proj, present) in enumerate(zip(arch.out_projections(baked), arch.present_heads(baked))):
            scale = gates[layer, present].repeat_interleave(dh).to(proj.weight)  # (H_present*dh,)
            if isinstance(proj, nn.Linear):
                proj.weight.mul_(scale[None, :])
            else:
                proj.weight.mul_(scale[:, None])
    return baked
