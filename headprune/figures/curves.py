"""Quality vs heads removed: pruning curves with their random baseline, and the compress trajectory."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from ._style import _check_fractions, _layout, _require_columns


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


def _slices(values) -> str:
    """Hover text for a candidate's validation values after each distillation slice ("" for one or none)."""
    values = list(values) if isinstance(values, (list, tuple)) else []
    return "<br>after each slice: " + " → ".join(f"{v:.4g}" for v in values) if len(values) > 1 else ""


def compress_figure(trajectory, *, heads_total: int, dense: float, threshold: float, test: float | None = None,
                    dense_test: float | None = None, y: str = "accuracy") -> go.Figure:
    """The compress trajectory: validation quality vs heads removed, one marker per candidate (filled: kept;
    an ✕: rolled back), coloured by phase, the path of kept models as a line; the dense value (dotted) and the
    budget threshold (dashed); with ``test``, the final model's single test result as a star beside the dense
    model's (a diamond). ``trajectory``: `CompressStep`s or a frame with columns step, phase ("least-squares",
    "distil", "polish"), heads_removed, val, accepted (optional: seconds, elapsed, distill_steps, slice_vals: the
    validation values after each distillation slice, shown on hover)."""
    frame = _trajectory(trajectory, heads_total)
    fig = go.Figure()
    kept = frame[frame["accepted"]]
    fig.add_trace(go.Scatter(x=[0.0, *kept["pct"]], y=[dense, *kept["val"]], mode="lines",
                             line=dict(color="#7f7f7f", width=1.5), name="kept models (from dense)", hoverinfo="skip"))
    extra = [c for c in ("elapsed", "distill_steps") if c in frame.columns]
    for (phase, accepted), group in frame.groupby(["phase", "accepted"], sort=False):
        hover = "".join(f"<br>{c.replace('_', ' ')} %{{customdata[{i + 1}]:.4g}}" for i, c in enumerate(extra))
        slices = (group["slice_vals"].map(_slices) if "slice_vals" in group.columns
                  else pd.Series("", index=group.index))
        fig.add_trace(go.Scatter(
            x=group["pct"], y=group["val"], mode="markers", name=f"{phase} ({'kept' if accepted else 'rolled back'})",
            legendgroup=phase, customdata=group[["step", *extra]].to_numpy(), text=slices.tolist(),
            marker=dict(color=_PHASE_COLOURS[phase], size=10 if accepted else 9,
                        symbol="circle" if accepted else "x-thin-open", line=dict(width=2)),
            hovertemplate=f"step %{{customdata[0]}} ({phase}, {'kept' if accepted else 'rolled back'})<br>"
                          f"%{{x:.1f}}% of heads removed<br>validation {y} %{{y:.4g}}{hover}%{{text}}"
                          "<extra></extra>"))
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


