"""figures.attention: attention maps and token-change shading."""
import numpy as np
import plotly.graph_objects as go
import pytest
from helpers.figdata import random_scores

from headprune import figures


# ------------------------------------------------------------------------------------------- attention
def test_attention_long_sequence_labels_sparse_hover_complete():
    n = 200
    tokens = [f"tok{i}" for i in range(n)]
    weights = np.random.default_rng(0).dirichlet(np.ones(n), size=n)  # (T_query, T_key), rows sum to 1
    fig = figures.attention_figure(weights, tokens)
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    for axis in (fig.layout.xaxis, fig.layout.yaxis):
        assert 0 < len(axis.ticktext) <= 64
        assert list(axis.tickvals) == list(range(0, n, 4))  # k = ceil(200 / 64) = 4
    customdata = np.asarray(heat.customdata)
    assert customdata.shape == (n, n, 2)
    assert list(customdata[:, 0, 0]) == tokens and list(customdata[0, :, 1]) == tokens
    assert "query '%{customdata[0]}' (%{y}) → key '%{customdata[1]}' (%{x}): %{z:.3f}" in heat.hovertemplate
    assert list(fig.layout.yaxis.range) == [n - 0.5, -0.5] and fig.layout.yaxis.scaleanchor == "x"
    assert len(figures.attention_figure(weights, tokens, max_label_tokens=10).layout.xaxis.tickvals) <= 10


def test_attention_duplicate_tokens_stay_distinct_and_markup_is_escaped():
    tokens = ["<s>", "the", "the", "cat"]
    weights = np.tril(np.ones((4, 4)))
    weights /= weights.sum(axis=1, keepdims=True)
    fig = figures.attention_figure(weights, tokens, title="layer 0, head 1")
    (heat,) = fig.data
    assert list(heat.x) == [0, 1, 2, 3] and np.asarray(heat.z).shape == (4, 4)
    assert list(fig.layout.xaxis.ticktext) == ["&lt;s&gt;", "the", "the", "cat"]
    assert heat.customdata[2][1][1] == "the" and heat.customdata[2][2][1] == "the"
    with pytest.raises(ValueError, match=r"weights must have shape \(T_query, T_key\) = \(3, 3\).*got shape \(4, 4\)"):
        figures.attention_figure(weights, tokens[:3])


def test_attention_mean_explainer_shows_a_flat_panel_beside_a_varying_one():
    flat = np.full((4, 6), 1 / 12)
    fig = figures.attention_mean_explainer_figure(flat, random_scores(), "gradient")
    left, right = fig.data
    assert isinstance(left, go.Heatmap) and isinstance(right, go.Heatmap)
    assert np.ptp(np.asarray(left.z)) == 0 and np.ptp(np.asarray(right.z)) > 0
    assert left.coloraxis != right.coloraxis
    assert fig.layout.coloraxis.colorscale == fig.layout.coloraxis2.colorscale
    assert fig.layout.coloraxis.cmin <= 1 / 12 <= fig.layout.coloraxis.cmax
    assert "every row of attention sums to 1" in fig.layout.title.text
    assert "gradient" in fig.layout.annotations[1].text
    with pytest.raises(ValueError, match=r"scores_other must have shape \(4, 6\)"):
        figures.attention_mean_explainer_figure(flat, random_scores(3, 6), "gradient")
