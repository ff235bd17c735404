"""Figure builders: built from small synthetic data, checked on the properties the dashboard relies on."""
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from headprune import figures


def _scores(layers=4, heads=6, seed=0):
    return np.random.default_rng(seed).random((layers, heads))


def _points(fig):
    """(layer, head) of every grid point, over all traces, with the trace name of each."""
    return [(tuple(cd), trace.name) for trace in fig.data for cd in trace.customdata]


def _plot_px(fig):
    """Plot-area (height, width) in pixels from the layout."""
    m = fig.layout.margin
    return fig.layout.height - m.t - m.b, fig.layout.width - m.l - m.r


# ------------------------------------------------------------------------------------------- head grid
def test_head_grid_is_a_selectable_scatter_with_every_head_once():
    scores = _scores()
    keep = np.random.default_rng(1).random(scores.shape) > 0.3
    fig = figures.head_grid_figure(scores, keep)
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    points = _points(fig)
    assert len(points) == scores.size
    assert {p for p, _ in points} == {(l, h) for l in range(4) for h in range(6)}
    for trace in fig.data:  # x = head, y = layer, customdata = (layer, head)
        assert [[y, x] for x, y in zip(trace.x, trace.y)] == [list(cd) for cd in trace.customdata]
    assert fig.layout.dragmode == "pan"  # Streamlit delivers clicks only outside select mode
    assert fig.layout.clickmode == "event+select"
    assert list(fig.layout.yaxis.range) == [3.5, -0.5]  # layer 0 at the top


def test_removed_heads_are_drawn_differently_from_kept_ones():
    scores = _scores()
    keep = np.ones(scores.shape, dtype=bool)
    keep[1, 2] = keep[3, 0] = False
    kept, _, removed = figures.head_grid_figure(scores, keep).data
    assert {tuple(cd) for cd in removed.customdata} == {(1, 2), (3, 0)}
    assert len(kept.customdata) == scores.size - 2
    assert removed.marker.symbol != kept.marker.symbol and "x" in removed.marker.symbol
    assert isinstance(removed.marker.color, str)  # grey, not the score colour
    assert all("removed" in text for text in removed.hovertext)
    assert removed.showlegend and not figures.head_grid_figure(scores).data[2].showlegend


def test_nan_scores_are_grey_and_ignored_by_the_colour_range():
    scores = np.array([[0.0, np.nan, 2.0], [np.nan, 1.0, 4.0]])
    fig = figures.head_grid_figure(scores)
    kept, missing, _ = fig.data
    assert {tuple(cd) for cd in missing.customdata} == {(0, 1), (1, 0)}
    assert missing.marker.color == figures.heads._GREY
    assert np.isfinite(np.asarray(kept.marker.color)).all()
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 4.0)
    assert "n/a" in missing.hovertext[0]
    figures.head_grid_figure(np.full((2, 3), np.nan)).to_json()  # nothing finite at all


def test_colour_range_given_default_and_constant():
    scores = _scores()
    fig = figures.head_grid_figure(scores, zmin=-1, zmax=2)
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-1, 2)
    assert fig.data[0].marker.coloraxis == "coloraxis"
    fig = figures.head_grid_figure(scores)
    assert fig.layout.coloraxis.cmin == pytest.approx(scores.min())
    assert fig.layout.coloraxis.cmax == pytest.approx(scores.max())
    flat = figures.head_grid_figure(np.full((3, 3), 0.25)).layout.coloraxis
    assert flat.cmin < 0.25 < flat.cmax
    with pytest.raises(ValueError, match="zmin=3.0 > zmax=1.0"):
        figures.head_grid_figure(scores, zmin=3, zmax=1)


@pytest.mark.parametrize("shape", [(30, 9), (6, 12), (12, 12), (80, 64), (1, 1)])
@pytest.mark.parametrize("height", [None, 500])
def test_grid_squares_tile_without_overlap(shape, height):
    fig = figures.head_grid_figure(_scores(*shape), height=height)
    plot_h, plot_w = _plot_px(fig)
    cell = min(plot_h / shape[0], plot_w / shape[1])  # axes are anchored 1:1, so this is the cell edge
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    for trace in fig.data:
        extent = trace.marker.size + trace.marker.line.width
        assert extent <= cell + 1e-9, (trace.name, extent, cell)
        assert trace.marker.size >= 0.8 * cell  # tiles: gaps stay small
    if height is not None:
        assert fig.layout.height == height
    assert len(fig.layout.yaxis.tickvals) * 14 <= plot_h + 14  # layer labels do not collide


def test_grid_hover_text_and_score_label():
    scores = _scores(2, 2)
    hover = np.array([["rank 1 [1-2]", "prev-token"], ["", "sink"]], dtype=object)
    fig = figures.head_grid_figure(scores, hover=hover, score_label="fisher")
    text = dict(zip(map(tuple, fig.data[0].customdata), fig.data[0].hovertext))
    assert text[(0, 0)].startswith("layer 0, head 0<br>fisher: ")
    assert text[(0, 0)].endswith("rank 1 [1-2]") and text[(1, 1)].endswith("sink")
    assert fig.layout.coloraxis.colorbar.title.text == "fisher"


def test_grid_kv_groups_get_separators_and_labels():
    fig = figures.head_grid_figure(_scores(3, 8), kv_group_size=4)
    assert [shape.x0 for shape in fig.layout.shapes] == [3.5]
    assert [a.text for a in fig.layout.annotations] == ["KV 0", "KV 1"]
    assert "KV" in fig.layout.xaxis.title.text
    assert "(KV group 1)" in dict(zip(map(tuple, fig.data[0].customdata), fig.data[0].hovertext))[(0, 5)]
    assert not figures.head_grid_figure(_scores(3, 8), kv_group_size=1).layout.shapes  # plain multi-head
    with pytest.raises(ValueError, match="kv_group_size must be a positive integer dividing num_heads=8"):
        figures.head_grid_figure(_scores(3, 8), kv_group_size=3)


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"keep must be a bool array of shape \(4, 6\).*got shape \(6, 4\)"):
        figures.head_grid_figure(_scores(), np.ones((6, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"scores must be a non-empty 2-D array.*got shape \(5,\)"):
        figures.head_grid_figure(np.ones(5))
    with pytest.raises(ValueError, match=r"hover must be .* shape \(4, 6\)"):
        figures.head_grid_figure(_scores(), hover=[["x"]])
    with pytest.raises(ValueError, match="use height >="):
        figures.head_grid_figure(_scores(30, 9), height=100)


# -------------------------------------------------------------------------------------- small multiples
def test_small_multiples_normalise_per_metric_with_one_colour_bar():
    maps = {"gradient": _scores(seed=1) * 100, "entropy": _scores(seed=2) - 5,
            "attention_mean": np.full((4, 6), 1 / 7), "random": _scores(seed=3)}
    fig = figures.small_multiples_figure(maps, cols=3)
    assert len(fig.data) == 4 and all(isinstance(t, go.Heatmap) for t in fig.data)
    assert [a.text for a in fig.layout.annotations] == list(maps)
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
    for trace, raw in zip(fig.data, maps.values()):
        z = np.asarray(trace.z)
        assert z.min() >= 0 and z.max() <= 1
        np.testing.assert_allclose(np.asarray(trace.customdata), raw)  # hover keeps raw values
    np.testing.assert_allclose(np.asarray(fig.data[2].z), 0.5)  # constant map: flat, not NaN
    raw = figures.small_multiples_figure(maps, normalise=False)
    assert raw.layout.coloraxis.cmin == pytest.approx(maps["entropy"].min())
    with pytest.raises(ValueError, match=r"score_maps\['b'\] must have shape \(4, 6\)"):
        figures.small_multiples_figure({"a": _scores(), "b": _scores(3, 6)})
    with pytest.raises(ValueError, match="score_maps is empty"):
        figures.small_multiples_figure({})


# ---------------------------------------------------------------------------------------- correlation
def test_correlation_is_annotated_with_a_fixed_diverging_range():
    corr = pd.DataFrame(np.random.default_rng(0).random((6, 3)), columns=["gradient", "fisher", "ablation"]).corr(
        method="spearman")
    corr.loc["fisher", "ablation"] = np.nan
    fig = figures.correlation_figure(corr)
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    assert (heat.zmin, heat.zmax) == (-1, 1)
    assert list(heat.x) == ["gradient", "fisher", "ablation"]
    assert heat.text[0][0] == "1.00" and heat.text[1][2] == "n/a"
    assert heat.texttemplate
    assert fig.layout.title.text == "Rank correlation (Spearman)"
    with pytest.raises(ValueError, match="square DataFrame with the same unique labels"):
        figures.correlation_figure(corr.iloc[:2])


# ---------------------------------------------------------------------------------------------- curves
def _curves():
    rows = [dict(metric=m, mode=mode, fraction=f, accuracy=1 - f * k, loss=f * k)
            for m, k in (("gradient", 0.5), ("random", 0.9)) for mode in ("one-shot", "iterative")
            for f in (0.0, 0.25, 0.5)]
    return pd.DataFrame(rows)


def test_curves_lines_band_current_and_dense():
    baseline = pd.DataFrame(dict(fraction=[0, 0.5], mean=[0.9, 0.6], low=[0.85, 0.5], high=[0.95, 0.7]))
    fig = figures.curves_figure(_curves(), baseline=baseline, current=(0.3, 0.8), dense_accuracy=0.9)
    by_name = {t.name: t for t in fig.data}
    assert {"gradient (one-shot)", "gradient (iterative)", "random (one-shot)", "random (iterative)"} <= set(by_name)
    assert by_name["gradient (iterative)"].line.dash == "dash"
    assert by_name["gradient (one-shot)"].line.dash == "solid"
    assert by_name["gradient (one-shot)"].line.color == by_name["gradient (iterative)"].line.color
    assert list(by_name["gradient (one-shot)"].x) == [0, 25, 50]  # percent of heads
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1 and max(band[0].y) == 0.95 and min(band[0].y) == 0.5
    star = by_name["current mask"]
    assert star.marker.symbol == "star" and list(star.x) == [30] and list(star.y) == [0.8]
    assert [(s.y0, s.line.dash) for s in fig.layout.shapes] == [(0.9, "dot")]
    assert fig.layout.xaxis.ticksuffix == "%"
    plain = figures.curves_figure(_curves(), y="loss")
    assert not any(t.fill for t in plain.data) and not plain.layout.shapes
    assert plain.layout.yaxis.title.text == "loss"


def test_curves_reject_bad_input():
    with pytest.raises(ValueError, match=r"curves must have columns .*missing \['mode'\]"):
        figures.curves_figure(_curves().drop(columns="mode"))
    percent = _curves().assign(fraction=lambda d: d.fraction * 100)
    with pytest.raises(ValueError, match="fraction of heads pruned in \\[0, 1\\].*not percent"):
        figures.curves_figure(percent)
    with pytest.raises(ValueError, match=r"baseline must have columns"):
        figures.curves_figure(_curves(), baseline=pd.DataFrame(dict(fraction=[0.1], mean=[0.5])))


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
    fig = figures.attention_mean_explainer_figure(flat, _scores(), "gradient")
    left, right = fig.data
    assert isinstance(left, go.Heatmap) and isinstance(right, go.Heatmap)
    assert np.ptp(np.asarray(left.z)) == 0 and np.ptp(np.asarray(right.z)) > 0
    assert left.coloraxis != right.coloraxis
    assert fig.layout.coloraxis.colorscale == fig.layout.coloraxis2.colorscale
    assert fig.layout.coloraxis.cmin <= 1 / 12 <= fig.layout.coloraxis.cmax
    assert "every row of attention sums to 1" in fig.layout.title.text
    assert "gradient" in fig.layout.annotations[1].text
    with pytest.raises(ValueError, match=r"scores_other must have shape \(4, 6\)"):
        figures.attention_mean_explainer_figure(flat, _scores(3, 6), "gradient")


# ------------------------------------------------------------------------------------------------ cost
def test_cost_bars_normalise_to_dense():
    dense = dict(params=22_700_000, flops_per_token=45e6, latency_ms=4.0)
    pruned = dict(params=17_025_000, flops_per_token=30e6, latency_ms=3.0)
    fig = figures.cost_bars_figure(dense, pruned)
    bars_dense, bars_pruned = fig.data
    assert isinstance(bars_pruned, go.Bar) and fig.layout.barmode == "group"
    assert list(bars_dense.y) == [100.0] * 3
    assert list(bars_pruned.y) == pytest.approx([75.0, 100 * 30 / 45, 75.0])
    assert bars_dense.text[0] == "22.7 M" and bars_pruned.text[2] == "3 ms (75%)"
    assert figures.cost_bars_figure(dense, pruned, keys=("params",)).data[0].x == ("parameters",)
    with pytest.raises(ValueError, match="cost key 'kv_cache_bytes' must be in both dicts"):
        figures.cost_bars_figure(dense, pruned, keys=("kv_cache_bytes",))
    with pytest.raises(ValueError, match=r"dense\['params'\] must be > 0"):
        figures.cost_bars_figure(dict(dense, params=0), pruned)


# ------------------------------------------------------------------------------------------- A / B
def test_ab_grids_mark_exactly_the_heads_the_masks_disagree_on():
    a, b = _scores() > 0.5, _scores(seed=2) > 0.5
    fig = figures.ab_grid_figure(a, b, names=("pinned", "current"))
    heat_a, marks_a, heat_b, marks_b = fig.data
    assert np.array_equal(np.asarray(heat_a.z), a.astype(float)) and np.array_equal(np.asarray(heat_b.z), b.astype(float))
    layers, heads = np.nonzero(a != b)
    for marks in (marks_a, marks_b):
        assert list(marks.x) == heads.tolist() and list(marks.y) == layers.tolist()
    assert fig.layout.title.text.startswith(f"{int((a != b).sum())} heads differ between pinned and current")
    assert marks_a.customdata[0][0] == ("kept" if a[layers[0], heads[0]] else "removed")
    same = figures.ab_grid_figure(a, a)
    assert len(same.data[1].x) == 0 and same.layout.title.text.startswith("0 heads differ")
    with pytest.raises(ValueError, match=r"keep_b must have shape \(4, 6\)"):
        figures.ab_grid_figure(a, np.ones((3, 6), dtype=bool))


def test_token_changes_are_shaded_by_sign_and_size_and_escaped():
    out = figures.token_changes_html(["<b>", "good", "day"], [-2.0, 1.0, float("nan")])
    assert "&lt;b&gt;" in out and "<b>" not in out
    assert "rgba(214,39,40,1.00)" in out and "rgba(44,160,44,0.50)" in out  # red: less likely; green: more
    assert out.count("title=") == 2  # the unscored token has no change to show
    assert "rgba(44,160,44,0.25)" in figures.token_changes_html(["a"], [1.0], scale=4.0)
    with pytest.raises(ValueError, match="one delta per token"):
        figures.token_changes_html(["a", "b"], [1.0])


# ---------------------------------------------------------------------------------------- serialisable
@pytest.mark.parametrize("build", [
    lambda: figures.head_grid_figure(np.where(_scores() > 0.9, np.nan, _scores()), _scores(seed=4) > 0.5,
                                     kv_group_size=2, title="gradient"),
    lambda: figures.small_multiples_figure({"a": _scores(), "b": _scores(seed=1)}),
    lambda: figures.correlation_figure(pd.DataFrame(_scores(6, 3)).corr()),
    lambda: figures.curves_figure(_curves(), current=(0.5, 0.7), dense_accuracy=1.0),
    lambda: figures.attention_figure(np.eye(70), ["the"] * 70),
    lambda: figures.attention_mean_explainer_figure(np.full((4, 6), 0.1), _scores(), "fisher"),
    lambda: figures.cost_bars_figure(dict(params=10), dict(params=5), keys=("params",)),
    lambda: figures.compress_figure(_trajectory(), heads_total=12, dense=0.8, threshold=0.75, test=0.78),
    lambda: figures.ab_grid_figure(_scores() > 0.5, _scores(seed=2) > 0.5, kv_group_size=3),
])
def test_every_figure_serialises(build):
    fig = build()
    assert isinstance(fig, go.Figure)
    assert json.loads(fig.to_json())["data"]


# -------------------------------------------------------------------------------------------- compress
def _trajectory():
    rows = [(1, "least-squares", 6, 0.80, True), (2, "least-squares", 9, 0.70, False), (3, "least-squares", 7, 0.79, True),
            (4, "distil", 10, 0.80, True), (5, "distil", 11, 0.74, False), (6, "polish", 10, 0.81, True)]
    return pd.DataFrame([dict(step=s, phase=p, heads_removed=r, val=v, accepted=a, elapsed=10.0 * s, distill_steps=0)
                         for s, p, r, v, a in rows])


def test_compress_trajectory_marks_kept_and_rolled_back_steps_by_phase():
    fig = figures.compress_figure(_trajectory(), heads_total=12, dense=0.8, threshold=0.75, test=0.79, dense_test=0.8)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["kept models (from dense)"].x) == pytest.approx([0, 50, 700 / 12, 1000 / 12, 1000 / 12])
    assert list(by_name["kept models (from dense)"].y)[0] == 0.8
    back = by_name["least-squares (rolled back)"]
    assert back.marker.symbol == "x-thin-open" and list(back.x) == [75] and list(back.customdata[:, 0]) == [2]
    assert by_name["distil (kept)"].marker.color == by_name["distil (rolled back)"].marker.color
    assert by_name["least-squares (kept)"].marker.color != by_name["distil (kept)"].marker.color
    star = by_name["final model, test"]
    assert list(star.x) == pytest.approx([1000 / 12]) and list(star.y) == [0.79]
    assert sorted((s.y0, s.line.dash) for s in fig.layout.shapes) == [(0.75, "dash"), (0.8, "dot")]
    assert "elapsed" in back.hovertemplate


def test_compress_trace_overlays_a_curves_figure_and_bad_input_is_refused():
    fig = figures.add_compress_trace(figures.curves_figure(_curves()), _trajectory(), heads_total=12)
    trace = fig.data[-1]
    assert trace.name == "compress (its validation set)" and len(trace.x) == 4  # the kept models only
    empty = figures.compress_figure([], heads_total=12, dense=0.8, threshold=0.7, test=0.8)  # stopped before a step
    assert [t.name for t in empty.data] == ["kept models (from dense)", "final model, test"]
    with pytest.raises(ValueError, match=r"missing \['accepted'\]"):
        figures.compress_figure(_trajectory().drop(columns="accepted"), heads_total=12, dense=0.8, threshold=0.7)
    with pytest.raises(ValueError, match="heads_total"):
        figures.compress_figure(_trajectory(), heads_total=8, dense=0.8, threshold=0.7)
    with pytest.raises(ValueError, match="phases must be among"):
        figures.compress_figure(_trajectory().assign(phase="warm-up"), heads_total=12, dense=0.8, threshold=0.7)
