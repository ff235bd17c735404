"""figures.curves: pruning curves and the compress trajectory."""
import pandas as pd
import pytest
from helpers.figdata import curves, trajectory

from headprune import figures


def test_curves_lines_band_current_and_dense():
    baseline = pd.DataFrame(dict(fraction=[0, 0.5], mean=[0.9, 0.6], low=[0.85, 0.5], high=[0.95, 0.7]))
    fig = figures.curves_figure(curves(), baseline=baseline, current=(0.3, 0.8), dense_accuracy=0.9)
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
    plain = figures.curves_figure(curves(), y="loss")
    assert not any(t.fill for t in plain.data) and not plain.layout.shapes
    assert plain.layout.yaxis.title.text == "loss"


def test_curves_reject_bad_input():
    with pytest.raises(ValueError, match=r"curves must have columns .*missing \['mode'\]"):
        figures.curves_figure(curves().drop(columns="mode"))
    percent = curves().assign(fraction=lambda d: d.fraction * 100)
    with pytest.raises(ValueError, match="fraction of heads pruned in \\[0, 1\\].*not percent"):
        figures.curves_figure(percent)
    with pytest.raises(ValueError, match=r"baseline must have columns"):
        figures.curves_figure(curves(), baseline=pd.DataFrame(dict(fraction=[0.1], mean=[0.5])))





def test_compress_trajectory_marks_kept_and_rolled_back_steps_by_phase():
    fig = figures.compress_figure(trajectory(), heads_total=12, dense=0.8, threshold=0.75, test=0.79, dense_test=0.8)
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
    slices = trajectory().assign(slice_vals=[[], [], [], [0.71, 0.76, 0.8], [0.74], []])
    distil = {t.name: t for t in figures.compress_figure(slices, heads_total=12, dense=0.8, threshold=0.75).data}
    assert list(distil["distil (kept)"].text) == ["<br>after each slice: 0.71 → 0.76 → 0.8"]
    assert list(distil["distil (rolled back)"].text) == [""] and "%{text}" in distil["distil (kept)"].hovertemplate


def test_compress_trace_overlays_a_curves_figure_and_bad_input_is_refused():
    fig = figures.add_compress_trace(figures.curves_figure(curves()), trajectory(), heads_total=12)
    trace = fig.data[-1]
    assert trace.name == "compress (its validation set)" and len(trace.x) == 4  # the kept models only
    empty = figures.compress_figure([], heads_total=12, dense=0.8, threshold=0.7, test=0.8)  # stopped before a step
    assert [t.name for t in empty.data] == ["kept models (from dense)", "final model, test"]
    with pytest.raises(ValueError, match=r"missing \['accepted'\]"):
        figures.compress_figure(trajectory().drop(columns="accepted"), heads_total=12, dense=0.8, threshold=0.7)
    with pytest.raises(ValueError, match="heads_total"):
        figures.compress_figure(trajectory(), heads_total=8, dense=0.8, threshold=0.7)
    with pytest.raises(ValueError, match="phases must be among"):
        figures.compress_figure(trajectory().assign(phase="warm-up"), heads_total=12, dense=0.8, threshold=0.7)
