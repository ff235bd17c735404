"""Head roles: tags from constructed attention patterns, and from real tiny models."""
import numpy as np
import pytest
import torch
from helpers.scores import patterns as _patterns

from headprune.model import layout
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.scoring.roles import (
    COLUMNS,
    PREVIOUS_TOKEN_MIN,
    head_roles,
    roles_from_attention,
)


def _tags(frame):
    return {(int(r.head), r.role) for r in frame.itertuples()}


def test_constructed_patterns_get_their_roles_with_the_evidence():
    attn, mask = _patterns([8, 5, 6])
    frame = roles_from_attention([attn], mask, causal=False, heads=[[0, 1, 2, 3, 4]])
    assert list(frame.columns) == COLUMNS
    tags = _tags(frame)
    assert {(0, "previous-token"), (1, "next-token"), (2, "sink"), (3, "broad"), (4, "self")} <= tags
    assert (0, "broad") not in tags and (3, "previous-token") not in tags
    previous = frame[(frame["head"] == 0) & (frame["role"] == "previous-token")].iloc[0]
    assert previous["value"] == pytest.approx(1.0) and "previous token" in previous["statistic"]
    assert previous["value"] >= PREVIOUS_TOKEN_MIN


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_head_roles_on_tiny_models(family):
    model = tiny_model(family)
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    frame = head_roles(model, batches, max_examples=6)
    assert list(frame.columns) == COLUMNS
    n_layers, n_heads = layout.head_grid(model)
    assert frame["layer"].between(0, n_layers - 1).all() and frame["head"].between(0, n_heads - 1).all()
    assert np.isfinite(frame["value"]).all() and frame["value"].between(0, 1).all()
    if family != "bert":
        assert "next-token" not in set(frame["role"])
    assert model.config._attn_implementation == "sdpa"


def test_forced_broad_head_in_a_real_model_and_pruned_heads_have_no_row():
    model = tiny_model("gpt2")
    attn = layout.attention_modules(model)[0]
    with torch.no_grad():  # zero query of head 1 in layer 0 (head_dim 8): uniform over the visible keys
        attn.c_attn.weight[:, 8:16] = 0.0
        attn.c_attn.bias[8:16] = 0.0
    frame = head_roles(model, [tiny_batch(model)])
    broad = frame[(frame["layer"] == 0) & (frame["head"] == 1)]
    assert list(broad["role"]) == ["broad"] and broad["value"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 1] = False
    pruned = head_roles(prune(model, keep), [tiny_batch(model)])
    assert not ((pruned["layer"] == 0) & (pruned["head"] == 1)).any()
