"""Cost of a pruned model against dense: parameters, FLOPs, latency, KV cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ._style import _layout, _si

_COST_LABELS = {  # cost key -> (axis label, unit of the absolute number, whether it takes SI prefixes)
    "params": ("parameters", "", True),
    "flops_per_token": ("FLOPs / token", "FLOP", True),
    "latency_ms": ("latency", "ms", False),
    "kv_cache_bytes": ("KV cache", "B", True),
}
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


