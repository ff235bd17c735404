"""The normal equations of least-squares recovery (`headprune.recovery.lsq`), one layer's sub-block at a time:
accumulated batch by batch on calibration tokens, then solved as ridge least squares pulled towards the
current weights. `AttentionFit`: the attention output projection (per-head scales, or the kept heads' columns
and the bias); `FeedForwardFit`: the feed-forward output projection and bias (post-norm blocks)."""
from __future__ import annotations

import torch

from ..model.adapters import in_out_weight
from ..model.intervene import project
from ..model.layout import ffn_projections, head_dim, out_projections, present_heads

DEFAULT_DAMPING = {"scales": 1e-2, "weights": 1e-3}


def ridge(gram: torch.Tensor, damping: float, free: int = 0) -> torch.Tensor:
    """The ridge term λI' added to G: λ = damping · mean(diag G) over the first n − `free` unknowns, which it
    pulls; the last `free` ones (an intercept) are not pulled."""
    size = gram.shape[0]
    pulled = torch.ones(size, dtype=gram.dtype)
    if free:
        pulled[size - free:] = 0
    lam = damping * float(gram.diagonal()[pulled.bool()].mean().clamp(min=1e-12)) if size > free else 0.0
    return torch.diag(lam * pulled)


def solve(gram: torch.Tensor, rhs: torch.Tensor, prior: torch.Tensor, damping: float, free: int = 0) -> torch.Tensor:
    """Ridge solution of (G + λI') s = rhs + λI'·prior (`ridge`)."""
    reg = ridge(gram, damping, free)
    return torch.linalg.solve(gram + reg, rhs + reg @ prior)


class AttentionFit:
    """Normal equations of one layer's least-squares problem, accumulated batch by batch, then solved."""

    def __init__(self, model, layer: int, keep: torch.Tensor, method: str):
        self.proj = out_projections(model)[layer]
        self.layer, self.method = layer, method
        self.present = present_heads(model)[layer]  # original ids of the stored heads, in storage order
        stored = keep[layer, self.present]  # (H_stored,)
        self.heads, self.dh = len(self.present), head_dim(model)
        self.w0 = in_out_weight(self.proj).detach()  # (in, out)
        self.kept = stored.nonzero().flatten()  # positions among the stored heads
        self.kept_ids = torch.tensor(self.present, dtype=torch.long)[self.kept]  # their original ids
        self.cols = stored.repeat_interleave(self.dh).to(self.w0.device)
        self.intercept = method == "weights" and self.proj.bias is not None
        size = len(self.kept) if method == "scales" else int(self.cols.sum()) + int(self.intercept)
        self.gram = torch.zeros(size, size, dtype=torch.float64)
        self.rhs = torch.zeros(size, *(() if method == "scales" else (self.w0.shape[1],)), dtype=torch.float64)

    def add(self, x_dense: torch.Tensor, ctx_dense: torch.Tensor, x: torch.Tensor, ctx: torch.Tensor) -> None:
        """One batch's tokens (N, ·): the target's block input and context (the dense model's, or for the
        "local" target the pruned model's own), then the pruned model's under the recovery so far."""
        y = (x_dense + ctx_dense @ self.w0 - x).double()  # what W·ctx + b must add (N, out); b₀ cancels
        if self.method == "scales":  # per-head terms W₀,h·ctx_h: (N, k, out)
            terms = torch.einsum("nhk,hkd->nhd", ctx.unflatten(-1, (self.heads, self.dh))[:, self.kept],
                                 self.w0.unflatten(0, (self.heads, self.dh))[self.kept]).double()
            self.gram += torch.einsum("nkd,njd->kj", terms, terms).cpu()
            self.rhs += torch.einsum("nkd,nd->k", terms, y).cpu()
            return
        a = ctx[:, self.cols].double()
        if self.intercept:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
            y = y + self.proj.bias.double()
        self.gram += (a.T @ a).cpu()
        self.rhs += (a.T @ y).cpu()

    def solved(self, gates: torch.Tensor,
               damping: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None:
        """The least-squares (weight in the projection's layout, bias, gates): `gates` (L, H) with this layer's
        kept heads' scales written in ("scales"; else as given); None when there is nothing to fit."""
        proj, w0, cols = self.proj, self.w0, self.cols
        bias = None if proj.bias is None else proj.bias.detach()
        if self.gram.shape[0] == 0:  # no kept head and no bias: nothing to fit, the layer adds nothing
            return None
        if self.method == "scales":
            gates = gates.clone()
            gates[self.layer, self.kept_ids] = solve(self.gram, self.rhs,
                                                     torch.ones(len(self.kept), dtype=torch.float64), damping).float()
            scale = gates[self.layer, self.present].repeat_interleave(self.dh).to(w0)
            return in_out_weight(proj, w0 * scale[:, None]).clone(), bias, gates
        prior = w0[cols].double().cpu()
        if self.intercept:
            prior = torch.cat([prior, proj.bias.detach().double().cpu()[None]])
        solution = solve(self.gram, self.rhs, prior, damping, free=int(self.intercept)).to(w0)
        weight = torch.zeros_like(w0)
        weight[cols] = solution[: int(cols.sum())]
        return in_out_weight(proj, weight).contiguous(), solution[-1] if self.intercept else bias, gates


class FeedForwardFit:
    """Normal equations of one layer's feed-forward refit ("dense" target, post-norm blocks): the kept
    output projection's weight and bias such that h + W·a + b matches the dense model's h' + W₀·a' + b₀
    (h: the sub-block input, a: the output projection's input), ridge-pulled towards W₀, b₀."""

    def __init__(self, model, layer: int):
        self.proj = ffn_projections(model)[layer][1]
        self.layer = layer
        self.w0 = in_out_weight(self.proj).detach()  # (d_ff, d)
        self.intercept = self.proj.bias is not None
        size = self.w0.shape[0] + int(self.intercept)
        self.gram = torch.zeros(size, size, dtype=torch.float64)
        self.rhs = torch.zeros(size, self.w0.shape[1], dtype=torch.float64)

    def target(self, h_dense: torch.Tensor, a_dense: torch.Tensor) -> torch.Tensor:
        """The dense sub-block's pre-norm sum on one batch's tokens (N, d)."""
        return h_dense + project(self.proj, a_dense, self.proj.weight.detach(), self.proj.bias)

    def add(self, target: torch.Tensor, h: torch.Tensor, a: torch.Tensor) -> None:
        """One batch's tokens: the dense sum (N, d), the pruned model's sub-block input (N, d) and output
        projection input (N, d_ff). Products in the model's precision per batch, summed in float64."""
        if self.intercept:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
        self.gram += (a.T @ a).double().cpu()
        self.rhs += (a.T @ (target - h)).double().cpu()

    def solved(self, damping: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The least-squares (weight in the projection's layout, bias)."""
        prior = self.w0.double().cpu()
        if self.intercept:
            prior = torch.cat([prior, self.proj.bias.detach().double().cpu()[None]])
        solution = solve(self.gram, self.rhs, prior, damping, free=int(self.intercept)).to(self.w0)
        weight = in_out_weight(self.proj, solution[: self.w0.shape[0]]).contiguous()
        return weight, solution[-1] if self.intercept else None
