"""The Prune page's click-safe head grid: a Streamlit custom component (components v2; inline HTML/CSS/JS, no
build step) whose value is an event log, so that no click is ever lost.

Why a log. A widget whose value is "the current selection" cannot be loss-free: two values that reach the
server before a rerun starts are coalesced (Streamlit keeps only the latest), and a click on a grid that a
rerun has just replaced targets a widget the server no longer knows. Here the browser keeps every click
until the server says it has applied it.

The protocol, per mounted grid (`_grid.js` is the browser half):

* Browser -> server, the component's state value ``log``:
  ``{"client": id, "events": [{"seq": n, "heads": [[layer, head], ...], "keep": bool}, ...]}``, one event per
  interaction (a click, a dragged rectangle, Space/Enter on a focused cell). ``client`` is random per mount
  (a page reload or a page switch mounts the grid afresh, and its ``seq`` starts again at 1); ``seq`` rises by
  one per interaction. ``keep`` is what the heads become, decided in the browser from what the user sees, by
  one rule (a click flips a head; a dragged block is removed if any head in it is kept, else restored). Every interaction sends *all* events not yet acknowledged, so when Streamlit
  keeps only the latest value, that value still holds every earlier unacknowledged event.
* Server: `apply_log` applies, in ``seq`` order, each event above the last one applied for its client
  (``st.session_state[APPLIED]``, per grid key and client) through the page's ``on_event(heads, keep)``: the
  same `ui.set_keep` path as every other change, so undo, the URL and the tiles follow. It runs as the grid's
  change callback, before the page is drawn, and again when the page draws the grid (for what a cut-short
  callback left).
  Why events carry the result, not "toggle": a new interaction ends a running script, callbacks included, at
  its next `st.session_state` access or Streamlit call, so a callback can end between applying an event and
  recording it. Setting heads to a given state is idempotent: an event applied but not recorded is applied
  again, to the same effect. (Fast reruns are off in .streamlit/config.toml: with them, the next run starts
  while the ended one still finishes its current step, and a late write of that one could undo a click.)
* Server -> browser, the component's ``data``: the mask, each cell's colour and hover text, and ``acked``
  ({client: last seq applied}). The browser drops acknowledged events and draws the mask with its pending
  events applied on top, pending cells outlined dashed: every click shows at once and the server catches up.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch
from plotly.colors import sample_colorscale

APPLIED = "head_grid_applied"  # st.session_state: {grid key: {client: last seq applied}}
MAX_CLIENTS = 16  # mounts remembered per grid (older ones can no longer send anything)
GREY = "#c8c8c8"  # a head without a score
COLORSCALE = "Viridis"

_HERE = Path(__file__).parent
_COMPONENT = st.components.v2.component(
    "headprune_head_grid",
    js=(_HERE / "_grid.js").read_text(encoding="utf-8"),
    css=(_HERE / "_grid.css").read_text(encoding="utf-8"),
)

Heads = list[tuple[int, int]]


def new_events(log: Any, done: int) -> list[tuple[int, Heads, bool]]:
    """(seq, heads, keep) of each well-formed event in ``log`` with ``seq`` above ``done``, in ``seq`` order."""
    events = log.get("events") if isinstance(log, dict) else None
    out = []
    for event in events if isinstance(events, list) else []:
        try:
            seq, keep, heads = event["seq"], event["keep"], [(int(l), int(h)) for l, h in event["heads"]]
        except (TypeError, ValueError, KeyError):
            continue
        if isinstance(seq, int) and isinstance(keep, bool) and seq > done:
            out.append((seq, heads, keep))
    return sorted(out)


def apply_log(key: str, on_event: Callable[[Heads, bool], None]) -> None:
    """Hand each event of grid ``key``'s log not applied yet to ``on_event(heads, keep)``, in order; record it
    afterwards (copy on write, never in place: a stopped run must not change the state a new run reads)."""
    log = (st.session_state.get(key) or {}).get("log")
    if not isinstance(log, dict) or not isinstance(log.get("client"), str):
        return
    client = log["client"]
    for seq, heads, keep in new_events(log, st.session_state.get(APPLIED, {}).get(key, {}).get(client, 0)):
        on_event(heads, keep)
        grids = dict(st.session_state.get(APPLIED, {}))
        mine = {c: n for c, n in grids.get(key, {}).items() if c != client}
        mine[client] = seq  # the newest client last: the oldest is forgotten first
        grids[key] = dict(list(mine.items())[-MAX_CLIENTS:])
        st.session_state[APPLIED] = grids


def grid_data(keep: torch.Tensor, scores: np.ndarray, *, kv_group_size: int = 1, score_label: str = "score",
              acked: dict[str, int] | None = None) -> dict:
    """What the browser draws: shape, mask bits (row-major, "1" = kept), one colour and hover text per cell
    (row-major), the colour legend, and the acknowledged ``seq`` per client."""
    layers, heads = keep.shape
    scores = np.asarray(scores, dtype=float)
    finite = np.isfinite(scores)
    legend = None
    colours = [GREY] * scores.size  # no score at all yet
    if finite.any():
        lo, hi = float(scores[finite].min()), float(scores[finite].max())
        if lo == hi:  # a constant map sits mid-scale
            lo, hi = lo - (0.5 * abs(lo) or 0.5), hi + (0.5 * abs(hi) or 0.5)
        flat = scores.flatten()
        ramp = sample_colorscale(COLORSCALE, np.nan_to_num((flat - lo) / (hi - lo)).tolist())
        colours = [colour if np.isfinite(v) else GREY for v, colour in zip(flat, ramp)]
        legend = {"label": score_label, "lo": f"{lo:.3g}", "hi": f"{hi:.3g}",
                  "stops": sample_colorscale(COLORSCALE, list(np.linspace(0, 1, 9)))}
    tips = []
    for layer in range(layers):
        for head in range(heads):
            text = f"layer {layer}, head {head}" + (f" (KV group {head // kv_group_size})" if kv_group_size > 1 else "")
            value = scores[layer, head]
            tips.append(text + f"\n{score_label}: " + (format(value, ".4g") if np.isfinite(value) else "n/a"))
    return {"layers": layers, "heads": heads, "group": kv_group_size,
            "keep": "".join("1" if k else "0" for k in keep.flatten().tolist()),
            "colors": colours, "tips": tips, "legend": legend, "grey": bool((~finite).any()),
            "acked": dict(acked or {})}


def head_grid(key: str, keep: torch.Tensor, scores: np.ndarray, *, on_event: Callable[[Heads, bool], None],
              kv_group_size: int = 1, score_label: str = "score") -> None:
    """Draw the L x H grid of ``keep`` coloured by ``scores`` (NaN = grey). Each interaction (a click, a dragged
    rectangle, Space/Enter on a cell) reaches ``on_event(heads, keep)``, in order (see the module docstring);
    call `apply_log` before computing ``keep`` so that it includes what arrived with this run."""
    acked = st.session_state.get(APPLIED, {}).get(key, {})
    _COMPONENT(key=key, data=grid_data(keep, scores, kv_group_size=kv_group_size, score_label=score_label,
                                       acked=acked),
               on_log_change=functools.partial(apply_log, key, on_event))
