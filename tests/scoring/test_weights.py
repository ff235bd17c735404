"""Weight-only scores (headprune.scoring.weights): magnitude shares grouped-query KV heads among their group."""

import pytest

from headprune.model import layout
from headprune.model.tiny import tiny_model
from headprune.scoring.api import score_heads


def test_magnitude_divides_shared_key_value_heads_among_their_group():
    model = tiny_model("llama")  # 6 query heads, 2 KV heads: groups of 3
    attn = layout.attention_modules(model)[0]
    dh = layout.head_dim(model)
    q, k, v, o = (w.detach().double() for w in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, attn.o_proj.weight))
    head, group = 4, 1
    expected = (q[head * dh:(head + 1) * dh].square().sum() + (k[group * dh:(group + 1) * dh].square().sum()
                + v[group * dh:(group + 1) * dh].square().sum()) / 3 + o[:, head * dh:(head + 1) * dh].square().sum()).sqrt()
    assert score_heads(model, [], "magnitude", cache=False)[0, head].item() == pytest.approx(expected.item(), rel=1e-6)
