"""Pure figure builders: plain data (numpy arrays, lists, pandas frames) in, ``plotly.graph_objects.Figure`` out.

Nothing here computes scores or touches a model, and nothing imports Streamlit: the pages lay out what
these functions return, and the CLI can write the same figures to HTML. Every builder validates its input
and raises ``ValueError`` saying what shape or column it expected.

Conventions shared with the rest of headprune: per-head data has shape ``(num_layers, num_heads)``;
layer 0 is drawn at the top, like a table; a keep-mask is a bool array of that shape (``True`` = kept).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

__all__ = [
    "ab_grid_figure",
    "attention_figure",
    "add_compress_trace",
    "attention_mean_explainer_figure",
    "compress_figure",
    "correlation_figure",
    "cost_bars_figure",
    "curves_figure",
    "head_grid_figure",
    "small_multiples_figure",
    "token_changes_html",
]

_GREY = "#c8c8c8"  # kept head without a score (NaN)
_REMOVED = "#6f6f6f"  # outline and cross of a removed head
_DEFAULT_GRID_PX = (720.0, 640.0)  # largest default plot area of the head grid: height, width
_CELL_PX_RANGE = (6.0, 40.0)  # default cell edge of the head grid, in pixels
_GAP = 0.14  # fraction of a grid cell left empty between squares
_COST_LABELS = {  # cost key -> (axis label, unit of the absolute number, whether it takes SI prefixes)
    "params": ("parameters", "", True),
    "flops_per_token": ("FLOPs / token", "FLOP", True),
    "latency_ms": ("latency", "ms", False),
    "kv_cache_bytes": ("KV cache", "B", True),
}


# ----------------------------------------------------------------------------------------------- helpers
def _layout(fig: go.Figure, *, title: str = "", height: int | None = None, margin: dict | None = None,
            **extra) -> go.Figure:
    """The layout every headprune figure shares: white template, left-aligned title, full hover names."""
    fig.update_layout(
        template="plotly_white",
        title=dict(text=title or None, x=0.01, xanchor="left"),
        height=height,
        margin=margin or dict(l=60, r=30, t=60 if title else 30, b=50),
        font=dict(size=12),
        hoverlabel=dict(namelength=-1),
        **extra,
    )
    return fig


def _as_2d(name: str, values, expected: tuple[int, int] | None = None) -> np.ndarray:
    """``values`` as a float array of shape (num_layers, num_heads), or a ValueError saying what was expected."""
    arr = np.asarray(values, dtype=float)
    want = "(num_layers, num_heads)" if expected is None else str(tuple(expected))
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array of shape {want}; got shape {arr.shape}")
    if expected is not None and arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {want} to match the scores; got shape {arr.shape}")
    return arr


def _finite_range(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    """(lo, hi) for a colour scale: given bounds win, else the finite min / max; equal bounds are widened."""
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if lo is None and finite.size else (0.0 if lo is None else float(lo))
    hi = float(finite.max()) if hi is None and finite.size else (1.0 if hi is None else float(hi))
    if lo > hi:
        raise ValueError(f"colour range is empty: zmin={lo} > zmax={hi}; pass zmin <= zmax")
    if lo == hi:  # a constant map: put it mid-scale instead of dividing by zero
        pad = 0.5 * abs(lo) or 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _minmax(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1], NaN kept; a constant map becomes 0.5 everywhere (flat, not undefined)."""
    lo, hi = _finite_range(values)
    return (values - lo) / (hi - lo)


def _ticks(labels: Sequence[str], max_labels: int) -> tuple[list[int], list[str]]:
    """Tick positions and texts showing every k-th label, k chosen so that at most ``max_labels`` show."""
    step = max(1, math.ceil(len(labels) / max(1, max_labels)))
    positions = list(range(0, len(labels), step))
    return positions, [labels[i] for i in positions]


def _fmt(value: float, spec: str = ".4g") -> str:
    return "n/a" if not np.isfinite(value) else format(value, spec)


def _si(value: float, unit: str = "", prefixes: bool = True) -> str:
    """(1234567, 'B') -> '1.23 MB': three significant digits, with an SI prefix unless ``prefixes`` is off."""
    factor, prefix = next(((f, p) for f, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
                           if prefixes and abs(value) >= f), (1.0, ""))
    return f"{value / factor:.3g} {prefix}{unit}".strip()


def _token_label(token: str, max_chars: int | None = None) -> str:
    """A token as plotly text: control characters made visible, HTML escaped ('<s>' is a plotly tag)."""
    text = str(token).replace("\n", "\\n").replace("\t", "\\t")
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return html.escape(text, quote=False)


def _check_fractions(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1):
        raise ValueError(f"{what} must be a fraction of heads pruned in [0, 1]; got values from "
                         f"{np.nanmin(arr):g} to {np.nanmax(arr):g} (pass fractions, not percent)")
    return arr


def _require_columns(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} must have columns {list(columns)}; missing {missing} "
                         f"(has {list(frame.columns)})")


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
    num_layers, num_heads = scores.shape
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
    grouped = kv_group_size is not None and kv_group_size != 1
    if kv_group_size is not None and (int(kv_group_size) != kv_group_size or kv_group_size < 1
                                      or num_heads % kv_group_size):
        raise ValueError(f"kv_group_size must be a positive integer dividing num_heads={num_heads} "
                         f"(query heads per KV head); got {kv_group_size}")
    lo, hi = _finite_range(scores, zmin, zmax)

    # Geometry: square cells of `cell` pixels; the axes are anchored 1:1 so they stay square if stretched.
    margin = dict(l=56, r=96, t=14 + (36 if title else 0) + (20 if grouped else 0), b=84)
    max_h, max_w = _DEFAULT_GRID_PX
    if height is None:
        cell = float(np.clip(min(max_h / num_layers, max_w / num_heads), *_CELL_PX_RANGE))
        height = math.ceil(margin["t"] + margin["b"] + cell * num_layers)
    else:
        available = height - margin["t"] - margin["b"]
        if available < 2 * num_layers:
            raise ValueError(f"height={height} px leaves {available} px for {num_layers} layers; "
                             f"use height >= {margin['t'] + margin['b'] + 2 * num_layers}")
        cell = min(available / num_layers, max_w / num_heads)
    width = math.ceil(margin["l"] + margin["r"] + cell * num_heads)
    size = cell * (1 - _GAP)
    outline = min(2.0, cell * _GAP / 2)  # the open symbol's stroke: size + stroke stays inside the cell

    def points(mask: np.ndarray) -> dict:
        layers, heads = np.nonzero(mask)
        texts = []
        for layer, head in zip(layers, heads):
            text = f"layer {layer}, head {head}"
            if grouped:
                text += f" (KV group {head // kv_group_size})"
            text += f"<br>{score_label}: {_fmt(scores[layer, head])}"
            if not keep[layer, head]:
                text += "<br><b>removed</b>"
            if hover is not None and hover[layer, head]:
                text += f"<br>{hover[layer, head]}"
            texts.append(text)
        return dict(x=heads.tolist(), y=layers.tolist(), customdata=[[int(l), int(h)] for l, h in zip(layers, heads)],
                    hovertext=texts, hovertemplate="%{hovertext}<extra></extra>", mode="markers",
                    selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)))

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

    y_ticks = _ticks([str(i) for i in range(num_layers)], int(cell * num_layers // 14))
    x_ticks = _ticks([str(i) for i in range(num_heads)], int(cell * num_heads // 22))
    axis = dict(showgrid=False, zeroline=False, fixedrange=True, constrain="domain", automargin=False,
                tickmode="array", ticks="")
    fig.update_xaxes(axis, range=[-0.5, num_heads - 0.5], tickvals=x_ticks[0], ticktext=x_ticks[1],
                     title="query head (grouped by KV head)" if grouped else "head")
    fig.update_yaxes(axis, range=[num_layers - 0.5, -0.5], tickvals=y_ticks[0], ticktext=y_ticks[1],
                     title="layer", scaleanchor="x", scaleratio=1)
    if grouped:
        groups = num_heads // kv_group_size
        for g in range(1, groups):
            fig.add_vline(x=g * kv_group_size - 0.5, line=dict(color="#444", width=min(1.5, cell * _GAP)))
        label_step = max(1, math.ceil(40 / (cell * kv_group_size)))  # "KV 12" needs ~40 px
        for g in range(0, groups, label_step):
            fig.add_annotation(x=g * kv_group_size + (kv_group_size - 1) / 2, y=-0.5, yanchor="bottom",  # above row 0
                               text=f"KV {g}", showarrow=False, font=dict(size=10))
    return _layout(
        fig, title=title, height=height, margin=margin, width=width,
        coloraxis=dict(colorscale=colorscale, cmin=lo, cmax=hi,
                       colorbar=dict(title=dict(text=score_label), thickness=12, len=1, x=1.02, xanchor="left")),
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
        dragmode="pan", clickmode="event+select", hovermode="closest", plot_bgcolor="white",
    )


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


# ---------------------------------------------------------------------------------------------- curves
def curves_figure(
    curves: pd.DataFrame,
    *,
    baseline: pd.DataFrame | None = None,
    current: tuple[float, float] | None = None,
    dense_accuracy: float | None = None,
    y: str = "accuracy",
) -> go.Figure:
    """Quality vs fraction of heads pruned: one line per (metric, mode), iterative dashed.

    ``curves``: long format with columns ``metric``, ``mode`` ("one-shot" / "iterative"), ``fraction``
    (0..1 of heads pruned) and the ``y`` column (``accuracy`` or ``loss``). ``baseline``: columns
    ``fraction``, ``mean``, ``low``, ``high`` of the random baseline over seeds (same unit as ``y``), drawn
    as a shaded band with its mean line. ``current``: (fraction, value of ``y``) of the user's mask, a star.
    ``dense_accuracy``: the dense model's value of ``y``, a dotted reference line. x is in percent.
    """
    _require_columns(curves, "curves", ["metric", "mode", "fraction", y])
    _check_fractions(curves["fraction"], "curves['fraction']")
    others = [c for c in ("accuracy", "loss") if c in curves.columns and c != y]
    palette = qualitative.Plotly
    colours = {m: palette[i % len(palette)] for i, m in enumerate(pd.unique(curves["metric"]))}
    fig = go.Figure()
    if baseline is not None:
        _require_columns(baseline, "baseline", ["fraction", "mean", "low", "high"])
        base = baseline.sort_values("fraction")
        x = 100 * _check_fractions(base["fraction"], "baseline['fraction']")
        fig.add_trace(go.Scatter(
            x=np.concatenate([x, x[::-1]]), y=np.concatenate([base["high"], base["low"][::-1]]),
            fill="toself", fillcolor="rgba(127,127,127,0.2)", line=dict(width=0), hoverinfo="skip",
            name="random (range over seeds)", legendgroup="random"))
        fig.add_trace(go.Scatter(
            x=x, y=base["mean"], mode="lines", line=dict(color="#7f7f7f", width=1.5), name="random (mean)",
            legendgroup="random", hovertemplate=f"random<br>%{{x:.1f}}% pruned<br>{y} %{{y:.4g}}<extra></extra>"))
    for (metric, mode), group in curves.groupby(["metric", "mode"], sort=False):
        group = group.sort_values("fraction")
        extra = "".join(f"<br>{c} %{{customdata[{i}]:.4g}}" for i, c in enumerate(others))
        fig.add_trace(go.Scatter(
            x=100 * group["fraction"].to_numpy(), y=group[y], mode="lines+markers", name=f"{metric} ({mode})",
            legendgroup=str(metric), customdata=group[others].to_numpy() if others else None,
            line=dict(color=colours[metric], dash="solid" if mode == "one-shot" else "dash"), marker=dict(size=5),
            hovertemplate=f"{html.escape(str(metric))} ({mode})<br>%{{x:.1f}}% pruned<br>{y} %{{y:.4g}}"
                          f"{extra}<extra></extra>"))
    if current is not None:
        fraction, value = current
        _check_fractions([fraction], "current[0]")
        fig.add_trace(go.Scatter(
            x=[100 * fraction], y=[value], mode="markers", name="current mask",
            marker=dict(symbol="star", size=20, color="#ffbf00", line=dict(color="black", width=1.5)),
            hovertemplate=f"current mask<br>%{{x:.1f}}% pruned<br>{y} %{{y:.4g}}<extra></extra>"))
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line=dict(dash="dot", color="#444", width=1.5),
                      annotation_text=f"dense {dense_accuracy:.4g}", annotation_position="top right")
    fig.update_xaxes(title="heads pruned (%)", ticksuffix="%", range=[-2, 102])
    fig.update_yaxes(title=y)
    return _layout(fig, height=460, hovermode="closest")


# ------------------------------------------------------------------------------------------- attention
def attention_figure(weights, tokens: Sequence[str], *, title: str = "", max_label_tokens: int | None = None) -> go.Figure:
    """One head's attention on one example: query tokens down the y axis, key tokens along x.

    ``weights``: (T_query, T_key) with T_query = T_key = T; ``tokens``: the T token strings. Axes use
    integer positions, so repeated tokens stay separate cells. Above ``max_label_tokens`` (default 64)
    only every k-th tick is labelled; the hover always names both tokens in full. Token 0 is at the top.
    """
    weights = np.asarray(weights, dtype=np.float32)  # float32 halves the payload at 512 tokens
    tokens = list(tokens)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1] or weights.shape[0] != len(tokens) or not tokens:
        raise ValueError(f"weights must have shape (T_query, T_key) = ({len(tokens)}, {len(tokens)}) for the "
                         f"{len(tokens)} tokens given; got shape {weights.shape}")
    n = len(tokens)
    max_labels = 64 if max_label_tokens is None else max_label_tokens
    ticks = _ticks([_token_label(t, 12) for t in tokens], max_labels)
    full = np.array([_token_label(t) for t in tokens], dtype=object)
    customdata = np.empty((n, n, 2), dtype=object)  # (T_query, T_key, [query token, key token])
    customdata[:, :, 0] = full[:, None]
    customdata[:, :, 1] = full[None, :]
    fig = go.Figure(go.Heatmap(
        z=weights, x=np.arange(n), y=np.arange(n), customdata=customdata, colorscale="Blues",
        zmin=0, zmax=_finite_range(weights, lo=0)[1], colorbar=dict(title=dict(text="weight"), thickness=12),
        hovertemplate="query '%{customdata[0]}' (%{y}) → key '%{customdata[1]}' (%{x}): %{z:.3f}<extra></extra>",
    ))
    axis = dict(tickmode="array", tickvals=ticks[0], ticktext=ticks[1], showgrid=False, zeroline=False,
                constrain="domain", tickfont=dict(size=11 if len(ticks[0]) <= 32 else 9))
    fig.update_xaxes(axis, range=[-0.5, n - 0.5], title="key", tickangle=-90 if n > 16 else -45)
    fig.update_yaxes(axis, range=[n - 0.5, -0.5], title="query", scaleanchor="x", scaleratio=1)
    return _layout(fig, title=title, height=int(np.clip(150 + 10 * n, 380, 760)),
                   margin=dict(l=90, r=30, t=60 if title else 30, b=90))


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


# ------------------------------------------------------------------------------------------------ cost
def cost_bars_figure(dense: Mapping[str, float], pruned: Mapping[str, float],
                     keys: Sequence[str] = ("params", "flops_per_token", "latency_ms")) -> go.Figure:
    """Grouped bars, dense vs pruned, each cost as percent of dense (dense = 100%); absolute values as text.

    ``dense`` / ``pruned``: cost name -> value, e.g. ``params`` (count), ``flops_per_token`` (FLOP),
    ``latency_ms`` (milliseconds), ``kv_cache_bytes`` (bytes). Every key must be in both, dense > 0.
    """
    keys = list(keys)
    for key in keys:
        if key not in dense or key not in pruned:
            raise ValueError(f"cost key {key!r} must be in both dicts; dense has {sorted(dense)}, "
                             f"pruned has {sorted(pruned)}")
        if not float(dense[key]) > 0:
            raise ValueError(f"dense[{key!r}] must be > 0 to normalise to 100%; got {dense[key]}")
    described = [_COST_LABELS.get(k, (k, "", True)) for k in keys]
    labels = [label for label, _, _ in described]

    def absolute(values: Mapping[str, float]) -> list[str]:
        return [_si(float(values[k]), unit, prefixes) for k, (_, unit, prefixes) in zip(keys, described)]

    percent = [100 * float(pruned[k]) / float(dense[k]) for k in keys]
    fig = go.Figure([
        go.Bar(name="dense", x=labels, y=[100.0] * len(keys), text=absolute(dense), marker_color="#9aa5b1"),
        go.Bar(name="pruned", x=labels, y=percent, marker_color="#1f77b4",
               text=[f"{a} ({p:.0f}%)" for a, p in zip(absolute(pruned), percent)]),
    ])
    fig.update_traces(textposition="outside", cliponaxis=False,
                      hovertemplate="%{fullData.name}: %{x}<br>%{text}<br>%{y:.1f}% of dense<extra></extra>")
    fig.update_yaxes(title="% of dense", ticksuffix="%", range=[0, max(115.0, 1.15 * max(percent, default=0))])
    return _layout(fig, title="Cost vs dense (dense = 100%)", height=380, barmode="group",
                   legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))


# -------------------------------------------------------------------------------------------- compress
_PHASE_COLOURS = {"least-squares": "#1f77b4", "distil": "#d62728", "polish": "#2ca02c"}
_TRAJECTORY_COLUMNS = ("step", "phase", "heads_removed", "val", "accepted")


def _trajectory(trajectory, heads_total: int) -> pd.DataFrame:
    """The compress trajectory (rows of `CompressStep`s or a frame) with ``pct``: percent of heads removed."""
    frame = pd.DataFrame([dict(row) for row in trajectory]) if not isinstance(trajectory, pd.DataFrame) else trajectory
    if frame.empty and not len(frame.columns):  # a run stopped before its first candidate
        dtypes = {"step": int, "phase": object, "heads_removed": int, "val": float, "accepted": bool}
        frame = pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in _TRAJECTORY_COLUMNS})
    _require_columns(frame, "trajectory", _TRAJECTORY_COLUMNS)
    if not heads_total > 0 or (frame["heads_removed"] > heads_total).any():
        raise ValueError(f"heads_total must be the number of heads (> 0, at least every heads_removed); got {heads_total}")
    unknown = set(frame["phase"]) - set(_PHASE_COLOURS)
    if unknown:
        raise ValueError(f"trajectory phases must be among {sorted(_PHASE_COLOURS)}; got {sorted(unknown)}")
    return frame.sort_values("step").assign(pct=lambda d: 100 * d["heads_removed"] / heads_total)


def compress_figure(trajectory, *, heads_total: int, dense: float, threshold: float, test: float | None = None,
                    dense_test: float | None = None, y: str = "accuracy") -> go.Figure:
    """The compress trajectory: validation quality vs heads removed, one marker per candidate (filled: kept;
    an ✕: rolled back), coloured by phase, the path of kept models as a line; the dense value (dotted) and the
    budget threshold (dashed); with ``test``, the final model's single test result as a star beside the dense
    model's (a diamond). ``trajectory``: `CompressStep`s or a frame with columns step, phase ("least-squares",
    "distil", "polish"), heads_removed, val, accepted (optional: seconds, elapsed, distill_steps)."""
    frame = _trajectory(trajectory, heads_total)
    fig = go.Figure()
    kept = frame[frame["accepted"]]
    fig.add_trace(go.Scatter(x=[0.0, *kept["pct"]], y=[dense, *kept["val"]], mode="lines",
                             line=dict(color="#7f7f7f", width=1.5), name="kept models (from dense)", hoverinfo="skip"))
    extra = [c for c in ("elapsed", "distill_steps") if c in frame.columns]
    for (phase, accepted), group in frame.groupby(["phase", "accepted"], sort=False):
        hover = "".join(f"<br>{c.replace('_', ' ')} %{{customdata[{i + 1}]:.4g}}" for i, c in enumerate(extra))
        fig.add_trace(go.Scatter(
            x=group["pct"], y=group["val"], mode="markers", name=f"{phase} ({'kept' if accepted else 'rolled back'})",
            legendgroup=phase, customdata=group[["step", *extra]].to_numpy(),
            marker=dict(color=_PHASE_COLOURS[phase], size=10 if accepted else 9,
                        symbol="circle" if accepted else "x-thin-open", line=dict(width=2)),
            hovertemplate=f"step %{{customdata[0]}} ({phase}, {'kept' if accepted else 'rolled back'})<br>"
                          f"%{{x:.1f}}% of heads removed<br>validation {y} %{{y:.4g}}{hover}<extra></extra>"))
    if test is not None:
        final = float(kept["pct"].iloc[-1]) if len(kept) else 0.0
        fig.add_trace(go.Scatter(x=[final], y=[test], mode="markers", name="final model, test",
                                 marker=dict(symbol="star", size=18, color="#ffbf00", line=dict(color="black", width=1)),
                                 hovertemplate=f"final model on test<br>%{{x:.1f}}% removed<br>{y} %{{y:.4g}}<extra></extra>"))
    if dense_test is not None:
        fig.add_trace(go.Scatter(x=[0.0], y=[dense_test], mode="markers", name="dense, test",
                                 marker=dict(symbol="diamond", size=11, color="#444"),
                                 hovertemplate=f"dense model on test<br>{y} %{{y:.4g}}<extra></extra>"))
    fig.add_hline(y=dense, line=dict(dash="dot", color="#444", width=1.5), annotation_text=f"dense {dense:.4g}",
                  annotation_position="top right")
    fig.add_hline(y=threshold, line=dict(dash="dash", color="#d62728", width=1.5),
                  annotation_text=f"budget {threshold:.4g}", annotation_position="bottom right")
    fig.update_xaxes(title="heads removed (%)", ticksuffix="%", range=[-2, 102])
    fig.update_yaxes(title=f"validation {y}")
    return _layout(fig, title="Compress trajectory", height=440, hovermode="closest")


def add_compress_trace(fig: go.Figure, trajectory, *, heads_total: int, name: str = "compress") -> go.Figure:
    """Overlay the compress trajectory's kept models (validation quality vs percent of heads removed) on a
    ``curves_figure``; returns ``fig``. Its values come from the run's validation examples, which the curves'
    data may not be: the trace's name says so."""
    kept = _trajectory(trajectory, heads_total).query("accepted")
    fig.add_trace(go.Scatter(
        x=kept["pct"], y=kept["val"], mode="lines+markers", name=f"{name} (its validation set)",
        line=dict(color="#d62728", width=2.5, dash="dot"), marker=dict(size=8, symbol="diamond"),
        customdata=kept["phase"], legendgroup="compress",
        hovertemplate=f"{html.escape(name)}: %{{customdata}}<br>%{{x:.1f}}% pruned<br>validation %{{y:.4g}}<extra></extra>"))
    return fig


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


# ------------------------------------------------------------------------------------------ token changes
def token_changes_html(tokens: Sequence[str], deltas: Sequence[float], *, scale: float | None = None) -> str:
    """Tokens as inline HTML, each shaded by how much its log-probability changed: red = the model now finds
    the token less likely, green = more likely, white = unchanged or not scored (NaN). ``scale``: the |Δ| that
    gets full colour (default: the largest |Δ|). The hover (title) gives the change in nats."""
    tokens, values = list(tokens), np.asarray(deltas, dtype=float)
    if len(tokens) != len(values):
        raise ValueError(f"one delta per token: got {len(tokens)} tokens and {len(values)} deltas")
    finite = np.abs(values[np.isfinite(values)])
    top = float(scale) if scale is not None else float(finite.max()) if finite.size else 1.0
    top = top if top > 0 else 1.0
    spans = []
    for token, value in zip(tokens, values):
        text = html.escape(str(token))
        if not np.isfinite(value):
            spans.append(f'<span style="padding:1px 2px">{text}</span>')
            continue
        alpha = min(1.0, abs(value) / top)
        rgb = "214,39,40" if value < 0 else "44,160,44"
        spans.append(f'<span title="Δ log-prob {value:+.2f}" style="background:rgba({rgb},{alpha:.2f});'
                     f'padding:1px 2px;border-radius:3px">{text}</span>')
    return '<span class="headprune-tokens" style="line-height:1.9">' + " ".join(spans) + "</span>"
