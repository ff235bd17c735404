"""figures.heads: the head grid, small multiples, correlation, the attention-mean explainer and A/B grids."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from helpers.figdata import grid_points, plot_px, random_scores

from headprune import figures


# ------------------------------------------------------------------------------------------- head grid
def test_head_grid_is_a_selectable_scatter_with_every_head_once():
    scores = random_scores()
    keep = np.random.default_rng(1).random(scores.shape) > 0.3
    fig = figures.head_grid_figure(scores, keep)
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    points = grid_points(fig)
    assert len(points) == scores.size
    assert {p for p, _ in points} == {(l, h) for l in range(4) for h in range(6)}
    for trace in fig.data:  # x = head, y = layer, customdata = (layer, head)
        assert [[y, x] for x, y in zip(trace.x, trace.y)] == [list(cd) for cd in trace.customdata]
    assert fig.layout.dragmode == "pan"  # Streamlit delivers clicks only outside select mode
    assert fig.layout.clickmode == "event+select"
    assert list(fig.layout.yaxis.range) == [3.5, -0.5]  # layer 0 at the top


def test_removed_heads_are_drawn_differently_from_kept_ones():
    scores = random_scores()
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
    scores = random_scores()
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
    fig = figures.head_grid_figure(random_scores(*shape), height=height)
    plot_h, plot_w = plot_px(fig)
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
    scores = random_scores(2, 2)
    hover = np.array([["rank 1 [1-2]", "prev-token"], ["", "sink"]], dtype=object)
    fig = figures.head_grid_figure(scores, hover=hover, score_label="fisher")
    text = dict(zip(map(tuple, fig.data[0].customdata), fig.data[0].hovertext))
    assert text[(0, 0)].startswith("layer 0, head 0<br>fisher: ")
    assert text[(0, 0)].endswith("rank 1 [1-2]") and text[(1, 1)].endswith("sink")
    assert fig.layout.coloraxis.colorbar.title.text == "fisher"


def test_grid_kv_groups_get_separators_and_labels():
    fig = figures.head_grid_figure(random_scores(3, 8), kv_group_size=4)
    assert [shape.x0 for shape in fig.layout.shapes] == [3.5]
    assert [a.text for a in fig.layout.annotations] == ["KV 0", "KV 1"]
    assert "KV" in fig.layout.xaxis.title.text
    assert "(KV group 1)" in dict(zip(map(tuple, fig.data[0].customdata), fig.data[0].hovertext))[(0, 5)]
    assert not figures.head_grid_figure(random_scores(3, 8), kv_group_size=1).layout.shapes  # plain multi-head
    with pytest.raises(ValueError, match="kv_group_size must be a positive integer dividing num_heads=8"):
        figures.head_grid_figure(random_scores(3, 8), kv_group_size=3)


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"keep must be a bool array of shape \(4, 6\).*got shape \(6, 4\)"):
        figures.head_grid_figure(random_scores(), np.ones((6, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"scores must be a non-empty 2-D array.*got shape \(5,\)"):
        figures.head_grid_figure(np.ones(5))
    with pytest.raises(ValueError, match=r"hover must be .* shape \(4, 6\)"):
        figures.head_grid_figure(random_scores(), hover=[["x"]])
    with pytest.raises(ValueError, match="use height >="):
        figures.head_grid_figure(random_scores(30, 9), height=100)


# -------------------------------------------------------------------------------------- small multiples
def test_small_multiples_normalise_per_metric_with_one_colour_bar():
    maps = {"gradient": random_scores(seed=1) * 100, "entropy": random_scores(seed=2) - 5,
            "attention_mean": np.full((4, 6), 1 / 7), "random": random_scores(seed=3)}
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
        figures.small_multiples_figure({"a": random_scores(), "b": random_scores(3, 6)})
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




# ------------------------------------------------------------------------------------------- A / B
def test_ab_grids_mark_exactly_the_heads_the_masks_disagree_on():
    a, b = random_scores() > 0.5, random_scores(seed=2) > 0.5
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
