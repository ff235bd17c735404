"""scoring.norm: per-example output norms ||Σ_j α_ij v_j W_O,h|| against a plain hook, under masks and pruning."""
from __future__ import annotations

import pytest
import torch

from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.scoring.norm import norm_contributions

pytestmark = pytest.mark.usefixtures("one_thread")

OUT_PROJECTIONS = {"bert": lambda m: [b.attention.output.dense for b in m.bert.encoder.layer],
                   "gpt2": lambda m: [b.attn.c_proj for b in m.transformer.h]}


def reference_norms(model, family, batch, n_heads):
    """(B, L, H): per example, mean over real tokens of ||x_h W_O,h||, recorded by a plain pre-hook on the
    output projection (its weight is (out, in) for nn.Linear, (in, out) for GPT-2's Conv1D)."""
    projections = OUT_PROJECTIONS[family](model)
    seen = {}
    hooks = [p.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0].detach()))
             for i, p in enumerate(projections)]
    try:
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for hook in hooks:
            hook.remove()
    mask = batch["attention_mask"].double()
    out = torch.zeros(batch["input_ids"].shape[0], len(projections), n_heads, dtype=torch.float64)
    for layer, proj in enumerate(projections):
        x = seen[layer].double()
        dh = x.shape[-1] // n_heads
        weight = proj.weight.detach().double()
        for h in range(n_heads):
            w_h = weight[h * dh:(h + 1) * dh] if family == "gpt2" else weight[:, h * dh:(h + 1) * dh].T
            norms = (x[..., h * dh:(h + 1) * dh] @ w_h).norm(dim=-1)  # (B, T)
            out[:, layer, h] = (norms * mask).sum(1) / mask.sum(1)
    return out


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_norms_match_a_plain_hook_per_example(family):
    model = tiny_model(family)
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    seen = []
    parts = norm_contributions(model, batches, progress=lambda f, m="": seen.append(f))
    expected = torch.cat([reference_norms(model, family, b, 4) for b in batches])
    assert parts.values.shape == (8, 3, 4) and parts.values.dtype == torch.float64
    torch.testing.assert_close(parts.values, expected, rtol=1e-4, atol=1e-6)
    assert parts.reduce == "mean" and torch.equal(parts.weights, torch.ones(8, dtype=torch.float64))
    torch.testing.assert_close(parts.aggregate(), expected.mean(0), rtol=1e-4, atol=1e-6)
    assert seen == [0.5, 1.0]


def test_masked_heads_are_measured_before_their_gate_and_pruned_heads_are_nan():
    model = tiny_model("bert")
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 2] = keep[1, 3] = False
    dense = norm_contributions(model, batches).values
    masked = norm_contributions(model, batches, keep).values
    # the output projection's input is captured before the gates: a masked head still reports what it would
    # write, and layer 0 (same input as the dense model) reports the dense values for every head
    assert (masked[:, ~keep] > 0).all()
    torch.testing.assert_close(masked[:, 0], dense[:, 0])
    assert not torch.allclose(masked[:, 1:, :], dense[:, 1:, :])  # later layers see the change
    pruned = norm_contributions(prune(model, keep), batches).values
    assert pruned[:, ~keep].isnan().all() and not pruned[:, keep].isnan().any()
    torch.testing.assert_close(pruned[:, keep], masked[:, keep], rtol=1e-4, atol=1e-5)  # masking = pruning
