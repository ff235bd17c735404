"""Analytic FLOPs and parameters (headprune.evaluation.cost) of dense vs physically pruned models."""
from __future__ import annotations

import pytest
from helpers.masks import uneven_keep as _keep

from headprune.evaluation.cost import flops_per_token, params_after
from headprune.model import layout
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_model
from headprune.model.units import to_units


@pytest.mark.parametrize("family", ["bert", "gpt2", "distilbert", "llama"])
def test_params_and_flops_match_the_pruned_model(family):
    model = tiny_model(family)
    keep = _keep(model)
    if family == "llama":
        keep = to_units(keep, model, "kv-group")  # no KV copies: the ideal count is exact
    pruned = prune(model, keep)
    assert params_after(model, keep) == layout.parameter_count(pruned) < layout.parameter_count(model)
    assert flops_per_token(model, keep, 12) == flops_per_token(pruned, None, 12) < flops_per_token(model, None, 12)
    assert params_after(model, None) == layout.parameter_count(model)


def test_flops_formula_on_bert():
    model = tiny_model("bert")  # d=32, 3 layers, 4 heads (dh=8), intermediate 37, 3 labels
    d, dh, ff, layers, heads, t = 32, 8, 37, 3, 4, 10
    per_layer = 4 * d * d + 2 * d * ff + heads * 2 * t * dh
    head = (d * d + d * 3) / t  # pooler + classifier, once per sequence
    assert flops_per_token(model, None, t) == round(2 * (layers * per_layer + head))
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(model, None, 0)
