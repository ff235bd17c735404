"""What every figure shares: the layout, input checks that raise ValueError naming the expected shape, and
number / token formatting."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go


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


