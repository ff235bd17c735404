"""Least-squares rescaling of kept heads (Kwon et al. 2022 mask tuning)."""
from __future__ import annotations

import pytest
import torch

from headprune import arch
from headprune.evaluate import evaluate
from headprune.mask import gated
from headprune.prune import prune
from headprune.recover import bake_gates, lsq_gates, reconstruction_error
from headprune.tiny import tiny_batch, tiny_model


def _setup(family):
    model = tiny_model(family)
    batches = [tiny_batch(model, seed=s, batch_size=8) for s in range(3)]
    keep = torch.ones(arch.head_grid(model), dtype=torch.bool)
    keep[0, :2] = False
    keep[1, 1] = False
    keep[2, 0] = False
    return model, batches, keep


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_rescaling_lowers_reconstruction_error_and_bakes_exactly(family):
    model, batches, keep = _setup(family)
    gates = lsq_gates(model, keep, batches)
    assert gates.shape == keep.shape
    assert torch.all(gates[~keep] == 0) and torch.all(gates[keep] != 0)
    before = reconstruction_error(model, keep.float(), batches)
    after = reconstruction_error(model, gates, batches)
    assert torch.all(after <= before + 1e-6) and after.sum() < before.sum()
    with gated(model, gates):
        live = evaluate(model, batches)
    recovered = prune(bake_gates(model, gates), keep)
    assert evaluate(recovered, batches)["loss"] == pytest.approx(live["loss"], rel=1e-4)
    if not arch.is_gqa(model):  # GQA: partially pruned groups may store KV copies (see `prune`)
        assert arch.parameter_count(recovered) < arch.parameter_count(model)


def test_unchanged_mask_gives_unit_gates_and_bad_input_is_rejected():
    model, batches, _ = _setup("bert")
    full = torch.ones(arch.head_grid(model), dtype=torch.bool)
    assert torch.equal(lsq_gates(model, full, batches), full.float())
    with pytest.raises(ValueError, match="damping"):
        lsq_gates(model, full, batches, damping=-1)
    with pytest.raises(ValueError, match="gates must be shaped"):
        bake_gates(model, torch.ones(2, 2))
    with pytest.raises(ValueError, match="unpruned"):
        lsq_gates(prune(model, ~torch.eye(*full.shape, dtype=torch.bool)), full, batches)
