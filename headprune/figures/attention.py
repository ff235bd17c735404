"""What a head looks at and what a token lost: an attention map and tokens shaded by log-probability change."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ._style import _finite_range, _layout, _ticks, _token_label


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
