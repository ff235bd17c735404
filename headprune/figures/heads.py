"""Per-head maps: the clickable layer x head grid, small multiples per metric, their rank correlations, the
`attention_mean` teaching figure and two masks side by side. Per-head data is (num_layers, num_heads), layer 0 on top."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._style import _as_2d, _finite_range, _fmt, _layout, _minmax, _ticks

_GREY = "#c8c8c8"  # kept head without a score (NaN)
_REMOVED = "#6f6f6f"  # outline and cross of a removed head
_DEFAULT_GRID_PX = (720.0, 640.0)  # largest default plot area of the head grid: height, width
_CELL_PX_RANGE = (6.0, 40.0)  # default cell edge of the head grid, in pixels
_GAP = 0.14  # fraction of a grid cell left empty between squares
# ------------------------------------------------------------------------------------------- head grid
def head_grid_figure(
    scores,
    keep=None,
    *,
    title: str = "",
    colorscale: str = "Viridis",
    zmin: float | None = None,
    zmax: float | None = None,
    hover=None,
    kv_group_size: int | None = None,
    score_label: str = "score",
    height: int | None = None,
) -> go.Figure:
    """The clickable layer x head grid: one square marker per head, coloured by its score.

    ``scores``: float array (num_layers, num_heads), NaN allowed (drawn grey). ``keep``: bool array of the
    same shape, None = all kept; removed heads are drawn as grey hollow squares with a cross. ``hover``:
    optional (num_layers, num_heads) strings (rank, rank interval, role tags) added to each head's hover.
    ``kv_group_size``: query heads per KV head (grouped-query attention); groups get separators and labels.
    ``height``: figure height in pixels (default: from the grid size). ``zmin`` / ``zmax`` fix the colour
    scale (default: finite min / max of ``scores``).

    It is a ``go.Scatter``, not a ``go.Heatmap``, because Streamlit reports selections only for scatter
    points. Traces, always in this order: 0 = kept heads with a score, 1 = kept heads without one (NaN),
    2 = removed heads; together they hold every head exactly once, with ``customdata = [layer, head]``,
    so an ``on_select`` callback reads ``point["customdata"]``. Drag mode is "pan": Streamlit's front
    end delivers clicks on scatter points only outside "select" mode; box select is one click away in the
    toolbar. The layout's width and height make cells square and markers tile without overlap; show it
    at that width (Streamlit: ``width="content"``); wider still works (the grid keeps square cells).
    """
    scores = _as_2d("scores", scores)
    keep, hover = _grid_inputs(scores, keep, hover, kv_group_size)
    num_layers, num_heads = scores.shape
    grouped = kv_group_size is not None and kv_group_size != 1
    lo, hi = _finite_range(scores, zmin, zmax)
    margin = dict(l=56, r=96, t=14 + (36 if title else 0) + (20 if grouped else 0), b=84)
    cell, height = _grid_cell(scores.shape, margin, height)
    width = math.ceil(margin["l"] + margin["r"] + cell * num_heads)
    size = cell * (1 - _GAP)
    outline = min(2.0, cell * _GAP / 2)  # the open symbol's stroke: size + stroke stays inside the cell

    def points(mask: np.ndarray) -> dict:
        return _grid_points(mask, scores, keep, hover, kv_group_size if grouped else None, score_label)

    finite = np.isfinite(scores)
    fig = go.Figure([
        go.Scatter(name="kept", showlegend=False, **points(keep & finite),
                   marker=dict(symbol="square", size=size, color=scores[keep & finite], coloraxis="coloraxis",
                               line=dict(width=0))),
        go.Scatter(name="no score", showlegend=bool((keep & ~finite).any()), **points(keep & ~finite),
                   marker=dict(symbol="square", size=size, color=_GREY, line=dict(width=0))),
        go.Scatter(name="removed", showlegend=bool((~keep).any()), **points(~keep),
                   marker=dict(symbol="square-x-open", size=size, color=_REMOVED, line=dict(width=outline))),
    ])
    _grid_axes(fig, scores.shape, cell, kv_group_size if grouped else None)
    return _layout(
        fig, title=title, height=height, margin=margin, width=width,
        coloraxis=dict(colorscale=colorscale, cmin=lo, cmax=hi,
                       colorbar=dict(title=dict(text=score_label), thickness=12, len=1, x=1.02, xanchor="left")),
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
        dragmode="pan", clickmode="event+select", hovermode="closest", plot_bgcolor="white",
    )


def _grid_inputs(scores: np.ndarray, keep, hover, kv_group_size: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The grid's keep mask (bool, all kept when None) and hover strings, checked against the scores' shape."""
    num_heads = scores.shape[1]
    if keep is None:
        keep = np.ones(scores.shape, dtype=bool)
    else:
        keep_arr = np.asarray(keep)
        if keep_arr.shape != scores.shape:
            raise ValueError(f"keep must be a bool array of shape {scores.shape} (num_layers, num_heads) "
                             f"like the scores; got shape {keep_arr.shape}")
        keep = keep_arr.astype(bool)
    if hover is not None:
        hover = np.asarray(hover, dtype=object)
        if hover.shape != scores.shape:
            raise ValueError(f"hover must be a 2-D array of strings of shape {scores.shape}; got shape {hover.shape}")
    if kv_group_size is not None and (int(kv_group_size) != kv_group_size or kv_group_size < 1
                                      or num_heads % kv_group_size):
        raise ValueError(f"kv_group_size must be a positive integer dividing num_heads={num_heads} "
                         f"(query heads per KV head); got {kv_group_size}")
    return keep, hover


def _grid_cell(shape: tuple[int, int], margin: dict, height: int | None) -> tuple[float, int]:
    """(cell edge in px, figure height in px): square cells filling the default plot area, or the given height."""
    num_layers, num_heads = shape
    max_h, max_w = _DEFAULT_GRID_PX
    if height is None:
        cell = float(np.clip(min(max_h / num_layers, max_w / num_heads), *_CELL_PX_RANGE))
        return cell, math.ceil(margin["t"] + margin["b"] + cell * num_layers)
    available = height - margin["t"] - margin["b"]
    if available < 2 * num_layers:
        raise ValueError(f"height={height} px leaves {available} px for {num_layers} layers; "
                         f"use height >= {margin['t'] + margin['b'] + 2 * num_layers}")
    return min(available / num_layers, max_w / num_heads), height


def _grid_points(mask: np.ndarray, scores: np.ndarray, keep: np.ndarray, hover, group: int | None,
                 score_label: str) -> dict:
    """Scatter arguments for the heads in `mask`: positions, ``customdata = [layer, head]`` and hover texts."""
    layers, heads = np.nonzero(mask)
    texts = []
    for layer, head in zip(layers, heads):
        text = f"layer {layer}, head {head}"
        if group:
            text += f" (KV group {head // group})"
        text += f"<br>{score_label}: {_fmt(scores[layer, head])}"
        if not keep[layer, head]:
            text += "<br><b>removed</b>"
        if hover is not None and hover[layer, head]:
            text += f"<br>{hover[layer, head]}"
        texts.append(text)
    return dict(x=heads.tolist(), y=layers.tolist(), customdata=[[int(l), int(h)] for l, h in zip(layers, heads)],
                hovertext=texts, hovertemplate="%{hovertext}<extra></extra>", mode="markers",
                selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)))


def _grid_axes(fig: go.Figure, shape: tuple[int, int], cell: float, group: int | None) -> None:
    """Fixed square axes, layer 0 on top, thinned tick labels; KV-group separators and labels when grouped."""
    num_layers, num_heads = shape
    y_ticks = _ticks([str(i) for i in range(num_layers)], int(cell * num_layers // 14))
    x_ticks = _ticks([str(i) for i in range(num_heads)], int(cell * num_heads // 22))
    axis = dict(showgrid=False, zeroline=False, fixedrange=True, constrain="domain", automargin=False,
                tickmode="array", ticks="")
    fig.update_xaxes(axis, range=[-0.5, num_heads - 0.5], tickvals=x_ticks[0], ticktext=x_ticks[1],
                     title="query head (grouped by KV head)" if group else "head")
    fig.update_yaxes(axis, range=[num_layers - 0.5, -0.5], tickvals=y_ticks[0], ticktext=y_ticks[1],
                     title="layer", scaleanchor="x", scaleratio=1)
    if not group:
        return
    groups = num_heads // group
    for g in range(1, groups):
        fig.add_vline(x=g * group - 0.5, line=dict(color="#444", width=min(1.5, cell * _GAP)))
    label_step = max(1, math.ceil(40 / (cell * group)))  # "KV 12" needs ~40 px
    for g in range(0, groups, label_step):
        fig.add_annotation(x=g * group + (group - 1) / 2, y=-0.5, yanchor="bottom",  # above row 0
                           text=f"KV {g}", showarrow=False, font=dict(size=10))


# -------------------------------------------------------------------------------------- small multiples
def small_multiples_figure(score_maps: Mapping[str, np.ndarray], *, cols: int = 3, normalise: bool = True) -> go.Figure:
    """One small layer x head heatmap per metric, sharing one colour bar.

    ``score_maps``: metric name -> (num_layers, num_heads) scores, all the same shape. With
    ``normalise`` each map is min-max scaled to [0, 1] on its own (a constant map becomes flat 0.5), so
    colours compare across metrics; otherwise all maps share the raw global range. Hover shows raw values.
    """
    if not score_maps:
        raise ValueError("score_maps is empty: pass {metric name: (num_layers, num_heads) array}")
    if cols < 1:
        raise ValueError(f"cols must be >= 1; got {cols}")
    names = list(score_maps)
    first = _as_2d(f"score_maps[{names[0]!r}]", score_maps[names[0]])
    maps = {name: _as_2d(f"score_maps[{name!r}]", score_maps[name], first.shape) for name in names}
    num_layers, num_heads = first.shape
    cols = min(cols, len(names))
    rows = math.ceil(len(names) / cols)
    shown = {name: _minmax(a) if normalise else a for name, a in maps.items()}
    lo, hi = (0.0, 1.0) if normalise else _finite_range(np.concatenate([a.ravel() for a in maps.values()]))

    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.03, shared_yaxes=True,
                        vertical_spacing=min(0.3, 0.12 / max(1, rows - 1) + 0.06))
    for i, name in enumerate(names):
        fig.add_trace(go.Heatmap(
            z=shown[name], x=np.arange(num_heads), y=np.arange(num_layers), customdata=maps[name],
            coloraxis="coloraxis", xgap=1, ygap=1,
            hovertemplate=f"{html.escape(name)}<br>layer %{{y}}, head %{{x}}<br>score %{{customdata:.4g}}"
                          + ("<br>normalised %{z:.2f}" if normalise else "") + "<extra></extra>",
        ), row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed", showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="layer", col=1)  # tick labels only in the first column (shared): no overlaps
    fig.update_xaxes(showgrid=False, zeroline=False)
    panel = float(np.clip(220 * num_layers / num_heads, 120, 320))
    return _layout(
        fig, height=math.ceil(rows * (panel + 40) + 40), margin=dict(l=40, r=30, t=40, b=30),
        coloraxis=dict(colorscale="Viridis", cmin=lo, cmax=hi,
                       colorbar=dict(title=dict(text="normalised" if normalise else "score"), thickness=12)),
    )


# ---------------------------------------------------------------------------------------- correlation
def correlation_figure(corr: pd.DataFrame, *, title: str = "Rank correlation (Spearman)") -> go.Figure:
    """Annotated square heatmap of a metric x metric correlation matrix (as ``DataFrame.corr()`` returns).

    The diverging colour scale is fixed to [-1, 1]; NaN (e.g. a constant metric) is printed as 'n/a'.
    """
    if not isinstance(corr, pd.DataFrame):
        raise ValueError(f"corr must be a pandas DataFrame (metric x metric); got {type(corr).__name__}")
    labels = [str(c) for c in corr.columns]
    if corr.shape[0] != corr.shape[1] or [str(i) for i in corr.index] != labels or not corr.columns.is_unique:
        raise ValueError("corr must be a square DataFrame with the same unique labels, in the same order, on "
                         f"rows and columns (as DataFrame.corr() returns); got index {list(corr.index)} "
                         f"and columns {list(corr.columns)}")
    values = corr.to_numpy(dtype=float)
    text = [[_fmt(v, ".2f") for v in row] for row in values]
    fig = go.Figure(go.Heatmap(
        z=values, x=labels, y=labels, text=text, texttemplate="%{text}", zmin=-1, zmax=1, zmid=0,
        textfont=dict(size=15 if len(labels) <= 6 else 13),
        colorscale="RdBu", xgap=1, ygap=1, colorbar=dict(thickness=12, tickvals=[-1, -0.5, 0, 0.5, 1]),
        hovertemplate="%{y} vs %{x}: %{text}<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", scaleratio=1, constrain="domain", showgrid=False)
    fig.update_xaxes(constrain="domain", showgrid=False, tickangle=-45)
    return _layout(fig, title=title, height=int(np.clip(160 + 48 * len(labels), 320, 720)))


def attention_mean_explainer_figure(scores_attention_mean, scores_other, other_name: str) -> go.Figure:
    """Teaching figure: ``attention_mean`` is the same for every head, a real metric is not.

    Both inputs are (num_layers, num_heads) scores. Each panel uses the same colour scale over
    [min(0, lo), max(0, hi)] of its own values, so a constant map is drawn as one flat colour and float
    noise is not stretched into a pattern; the titles give the actual values.
    """
    mean = _as_2d("scores_attention_mean", scores_attention_mean)
    other = _as_2d("scores_other", scores_other, mean.shape)
    num_layers, num_heads = mean.shape
    panels = []
    for values in (mean, other):
        lo, hi = _finite_range(values)
        panels.append((min(0.0, lo), max(0.0, hi), lo, hi))
    titles = [f"attention_mean: every head ≈ {_fmt(float(np.nanmean(mean)))}",
              f"{html.escape(other_name)}: {panels[1][2]:.3g} … {panels[1][3]:.3g}"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.16)
    for i, (values, name) in enumerate(((mean, "attention_mean"), (other, html.escape(other_name)))):
        fig.add_trace(go.Heatmap(
            z=values, x=np.arange(num_heads), y=np.arange(num_layers), coloraxis=f"coloraxis{i + 1 if i else ''}",
            xgap=1, ygap=1, hovertemplate=f"{name}<br>layer %{{y}}, head %{{x}}<br>%{{z:.4g}}<extra></extra>",
        ), row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", showgrid=False, zeroline=False, title="layer")
    fig.update_xaxes(showgrid=False, zeroline=False, title="head")
    colour_axes = {
        f"coloraxis{i + 1 if i else ''}": dict(colorscale="Viridis", cmin=lo, cmax=hi,
                                               colorbar=dict(thickness=12, x=0.42 if i == 0 else 1.0))
        for i, (lo, hi, _, _) in enumerate(panels)
    }
    return _layout(
        fig, height=int(np.clip(120 + 220 * num_layers / num_heads, 320, 560)), margin=dict(l=60, r=30, t=100, b=50),
        title="Why attention_mean cannot rank heads<br><sup>every row of attention sums to 1, so its mean is "
              "1/#keys for every head</sup>",
        **colour_axes,
    )




# ------------------------------------------------------------------------------------------ masks A / B
def ab_grid_figure(keep_a, keep_b, *, names: tuple[str, str] = ("A", "B"), kv_group_size: int | None = None) -> go.Figure:
    """Two masks side by side, layer x head: kept heads dark, removed light, and every head the masks
    disagree on outlined in red in both panels (hover says which mask keeps it).

    ``keep_a`` / ``keep_b``: bool arrays (num_layers, num_heads), True = kept. ``kv_group_size`` draws
    KV-group separators. Traces: per panel one heatmap, then one scatter of the disagreeing heads (possibly
    empty), so ``fig.data[1].x`` / ``.y`` list them (head, layer).
    """
    a = np.asarray(_as_2d("keep_a", keep_a), dtype=bool)
    b = np.asarray(_as_2d("keep_b", keep_b, a.shape), dtype=bool)
    num_layers, num_heads = a.shape
    differ = a != b
    layers, heads = np.nonzero(differ)
    titles = [f"{html.escape(n)}: {int(m.sum())} of {m.size} heads kept" for n, m in zip(names, (a, b))]
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.08)
    scale = [[0.0, "#e6e6e6"], [0.5, "#e6e6e6"], [0.5, "#1f77b4"], [1.0, "#1f77b4"]]
    for col, (name, mask) in enumerate(zip(names, (a, b)), start=1):
        state = np.where(mask, "kept", "removed")
        fig.add_trace(go.Heatmap(
            z=mask.astype(float), x=np.arange(num_heads), y=np.arange(num_layers), zmin=0, zmax=1, colorscale=scale,
            showscale=False, xgap=1, ygap=1, customdata=state,
            hovertemplate=f"{html.escape(name)}: layer %{{y}}, head %{{x}} %{{customdata}}<extra></extra>"), row=1, col=col)
        other = b if col == 1 else a
        fig.add_trace(go.Scatter(
            x=heads.tolist(), y=layers.tolist(), mode="markers", name="masks disagree", showlegend=col == 1,
            marker=dict(symbol="square-open", size=float(np.clip(360 / max(num_heads, num_layers), 6, 22)),
                        color="#d62728", line=dict(width=2)),
            customdata=[[("kept" if mask[l, h] else "removed"), ("kept" if other[l, h] else "removed")]
                        for l, h in zip(layers, heads)],
            hovertemplate=(f"layer %{{y}}, head %{{x}}<br>{html.escape(name)}: %{{customdata[0]}}, "
                           f"{html.escape(names[col % 2])}: %{{customdata[1]}}<extra></extra>")), row=1, col=col)
        if kv_group_size and kv_group_size > 1:
            for g in range(kv_group_size, num_heads, kv_group_size):
                fig.add_vline(x=g - 0.5, line=dict(color="#444", width=1), row=1, col=col)
    fig.update_yaxes(autorange="reversed", showgrid=False, zeroline=False, dtick=max(1, num_layers // 16))
    fig.update_yaxes(title="layer", col=1)
    fig.update_xaxes(showgrid=False, zeroline=False, title="head", dtick=max(1, num_heads // 16))
    height = int(np.clip(160 + 360 * num_layers / max(num_heads, 1), 260, 720))
    count = int(differ.sum())
    return _layout(fig, title=f"{count} head{'s differ' if count != 1 else ' differs'} between {html.escape(names[0])} "
                              f"and {html.escape(names[1])}", height=height,
                   legend=dict(orientation="h", y=-0.12, yanchor="top", x=0, xanchor="left"))


