"""Prune: click heads (or drag over blocks) to remove them and watch accuracy, cost and latency respond."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from headprune import arch
from headprune.figures import cost_bars_figure
from headprune.units import kv_cache_bytes_per_token
from app_pages import _grid
from app_pages import _ui as ui

w = ui.workload()
model = w.model
L, H = w.shape
total = L * H
group = arch.kv_group_size(model)
ss = st.session_state
GRID, BOXES = "prune_grid", "prune_checkboxes"  # the head grid's widget key; checkbox versions (sync_checkboxes)

st.title("Prune heads by hand")
st.caption("Click a head to remove it (click again to bring it back); drag a rectangle to toggle a block; or Tab into "
           "the grid, move with the arrow keys and toggle with Space. Clicks made while the page is busy are queued "
           "(dashed outline) and applied in order. Accuracy is recomputed exactly on the live set after every change; "
           "the instant estimate shows first.")


# ------------------------------------------------------------------------------------------ callbacks
# A new interaction ends a running script, callbacks included, at its next `st.session_state` access or Streamlit
# call. So the grid and the checkboxes change the mask by steps that can simply be done again: set heads to a given
# state, then record that it was done; whatever an interruption cut short, the next run redoes.
def set_heads(heads: list[tuple[int, int]], keep: bool) -> None:
    """Set ``heads`` kept (True) or removed through `ui.set_keep` (undo, URL); heads outside the model are ignored."""
    new = ui.keep().clone()
    changed = [(l, h) for l, h in heads if 0 <= l < L and 0 <= h < H and bool(new[l, h]) != keep]
    for layer, head in changed:
        new[layer, head] = keep
    if changed:
        ss["last_change"] = changed
        ui.set_keep(new)


def sync_checkboxes() -> None:
    """Apply every checkbox click not applied yet: a box whose value differs from the state it was drawn with.

    Each head's box key carries a version (``BOXES``: (layer, head) -> (version, state drawn)) that changes when
    the head changed some other way, so the box is a new widget showing the mask: the server never sets a box's
    value, and an old box that a browser reports again (it has not redrawn it yet) is not read at all."""
    for (layer, head), (version, drawn) in ss.get(BOXES, {}).items():
        value = ss.get(f"cb_{layer}_{head}_{version}")
        if value is not None and value != drawn:
            set_heads([(layer, head)], value)
            ss[BOXES] = {**ss[BOXES], (layer, head): (version, value)}


def apply(new: torch.Tensor, what: str) -> None:
    ss["last_action"] = what
    ui.set_keep(new)


def undo() -> None:
    try:
        ui.set_keep(ui.history().undo(), remember=False)
    except ValueError as exc:
        ss["last_action"] = f"⚠️ {exc}"


# ------------------------------------------------------------------------------------------ scores
metrics = ui.metric_names()
metric = ss.get("prune_metric") if ss.get("prune_metric") in metrics else ui.default_metric()
scores = ui.stored_scores(metric) if metric else None
grid_scores = ui.as_numpy(scores) if scores is not None else np.full((L, H), np.nan)


# ------------------------------------------------------------------------------------------ live panel
def estimate_note(keep_mask: torch.Tensor) -> str:
    """The line under the tiles while the exact value is computed: the instant (first-order) estimate."""
    try:
        guess = ui.estimate_loss(keep_mask) if int(keep_mask.sum()) < total else None
    except Exception as exc:  # an estimate is a courtesy; the exact value follows anyway
        return f"(no instant estimate: {exc}) Computing the exact value…"
    if guess is None:
        return "Computing the exact value…"
    return (f"Instant estimate (first-order Taylor): loss ≈ {guess:.3f} ({guess - w.dense['loss']:+.3f} vs dense). "
            "Computing the exact value…")


def live_panel(keep_mask: torch.Tensor, tiles, note) -> None:
    """The exact numbers of `keep_mask` as tiles (into `tiles`; until then the last ones stay) and how they were
    computed (into `note`, the one-line caption under them). Neither changes height, so the grid below never
    moves under the pointer."""
    dense = w.dense
    key, label = ui.quality_key(dense)
    kept = int(keep_mask.sum())
    try:
        result, seconds = ui.timed(lambda: ui.exact(keep_mask))
    except Exception as exc:
        note.caption("No exact value for this mask.")
        with tiles:
            ui.error("Could not evaluate this mask", exc)
        return
    rerun = result.get("rerun_from_layer")
    note.caption(f"Exact on {result.get('n', len(w.df))} examples in {seconds * 1000:.0f} ms"
                 + (f" (re-ran layers ≥ {rerun})" if rerun is not None else "")
                 + (f". Dense {label}: {dense[key]:.1%}." if key != "loss" else "."))
    c1, c2, c3, *rest = tiles.columns(6)
    if key != "loss":
        c1.metric(label, f"{100 * result[key]:.1f}%", delta=ui.delta(100 * (result[key] - dense[key]), " pts"), border=True,
                  height="stretch")
    c2.metric("loss", f"{result['loss']:.3f}", delta=ui.delta(result["loss"] - dense["loss"], "", "+.3f"),
              delta_color="inverse", border=True, height="stretch")
    c3.metric("heads kept", f"{kept} / {total}", delta=ui.delta(kept - total, "", "+d") or "±0", delta_color="off",
              delta_arrow="off", border=True, height="stretch")  # always a delta line: the row keeps its height
    cost_panel(keep_mask, rest)


def cost_panel(keep_mask: torch.Tensor, columns) -> None:
    cost = ui.engine("cost")
    kv_dense, kv_now = kv_cache_bytes_per_token(model), kv_cache_bytes_per_token(model, keep_mask)
    c1, c2, c3 = columns
    if cost is not None and hasattr(cost, "flops_per_token"):
        f_dense, f_now = cost.flops_per_token(model, None), cost.flops_per_token(model, keep_mask)
        c1.metric("FLOPs / token", f"{f_now / 1e6:.1f} M", delta=ui.delta(100 * (f_now / f_dense - 1), "%"),
                  delta_color="inverse", border=True, height="stretch")
    else:
        c1.metric("FLOPs / token", "n/a", help="needs headprune.cost", border=True, height="stretch")
    p_dense = arch.parameter_count(model)
    if cost is not None and hasattr(cost, "params_after"):
        p_now = cost.params_after(model, keep_mask)
        c2.metric("parameters", f"{p_now / 1e6:.2f} M", delta=ui.delta(100 * (p_now / p_dense - 1), "%"),
                  delta_color="inverse", border=True, height="stretch")
    else:
        c2.metric("parameters", f"{p_dense / 1e6:.2f} M", help="dense count (needs headprune.cost for the pruned one)",
                  border=True, height="stretch")
    c3.metric("KV cache / token", f"{kv_now / 1024:.1f} KiB", delta=ui.delta(100 * (kv_now / kv_dense - 1), "%"),
              delta_color="inverse", border=True, height="stretch")


def latency_panel(keep_mask: torch.Tensor) -> None:
    cost = ui.engine("cost")
    st.subheader("Measured latency")
    if cost is None:
        ui.unavailable("Latency measurement", "cost")
        return
    measured = ss.setdefault("measured", {})
    code = ui.encode_mask(keep_mask)
    c1, c2, c3 = st.columns([1, 1, 2])
    batch_size = c1.number_input("batch", 1, 256, 8, key="lat_batch")
    seq_len = c2.number_input("tokens", 8, 2048, 128, step=8, key="lat_seq")
    if c3.button("Measure latency (dense vs this mask, physically pruned)", key="measure"):
        try:
            with st.spinner("timing dense and pruned forward passes…"):
                measured[code] = cost.measure(model, keep_mask, batch_size=int(batch_size), seq_len=int(seq_len), repeats=10)
        except Exception as exc:
            ui.error("Could not measure latency", exc)
    result = measured.get(code)
    if result is None:
        st.caption("Not measured for this mask yet." + (" (Earlier masks were.)" if measured else ""))
        return
    d, p = result["dense"], result["pruned"]
    st.markdown(f"**dense** {d['latency_ms_median']:.1f} ms (p10–p90 {d['latency_ms_p10']:.1f}–{d['latency_ms_p90']:.1f}) · "
                f"**pruned** {p['latency_ms_median']:.1f} ms (p10–p90 {p['latency_ms_p10']:.1f}–{p['latency_ms_p90']:.1f}) · "
                f"**speed-up** {result.get('speedup', d['latency_ms_median'] / p['latency_ms_median']):.2f}×")
    if result.get("warning"):
        st.warning(result["warning"])
    fig = cost_bars_figure({"params": d["params"], "flops_per_token": d["flops_per_token"], "latency_ms": d["latency_ms_median"]},
                           {"params": p["params"], "flops_per_token": p["flops_per_token"], "latency_ms": p["latency_ms_median"]})
    st.plotly_chart(fig, key="cost_bars")


# ------------------------------------------------------------------------------------------ toggling area
def toggling_area() -> None:
    """Numbers, grid, buttons and checkboxes, all drawn from the one session mask. Not a fragment: every change
    reruns the whole page, so the recovery panel below and the URL never show another mask than the tiles."""
    _grid.apply_log(GRID, set_heads)  # what a stopped callback left (see the callbacks above), before drawing
    sync_checkboxes()
    keep_mask = ui.keep()
    tiles = st.container()  # the numbers first, full width, filled once the grid is out
    note = st.caption(estimate_note(keep_mask))  # a caption replaced by a caption: no blank line, no jump
    st.markdown(f"**{L} layers × {H} heads** · colour: "
                + (f"importance by `{metric}`" if scores is not None else "none yet"))
    if scores is None and metric is not None and st.button(f"Colour by importance ({metric})", key="prune_score"):
        try:
            with st.spinner(f"scoring heads by {metric}…"):
                ui.compute_scores(metric)
            st.rerun()
        except Exception as exc:
            ui.error("Could not score the heads", exc)
    _grid.head_grid(GRID, keep_mask, grid_scores, on_event=set_heads, kv_group_size=group,
                    score_label=metric or "score")
    b = st.columns([1, 1, 1, 3])
    b[0].button("↶ Undo", on_click=undo, disabled=len(ui.history()) == 0, width="stretch",
                help=f"{len(ui.history())} earlier masks")
    b[1].button("Reset", on_click=apply, args=(torch.ones(L, H, dtype=torch.bool), "reset: all heads kept"),
                width="stretch")
    b[2].button("Invert", on_click=apply, args=(~keep_mask, "inverted the mask"), width="stretch")
    if ss.get("last_action"):
        b[3].caption(ss["last_action"])
    with st.expander("Keyboard-friendly: the same mask as checkboxes (Tab / Space)"):
        boxes = dict(ss.get(BOXES, {}))
        for layer in range(L):
            cols = st.columns([1.2] + [1] * H)
            cols[0].markdown(f"**layer {layer}**")
            for head in range(H):
                kept = bool(keep_mask[layer, head])
                version, drawn = boxes.get((layer, head), (0, kept))
                boxes[(layer, head)] = (version + (drawn != kept), kept)  # changed elsewhere: a new box
                cols[head + 1].checkbox(f"{head}", value=kept, key=f"cb_{layer}_{head}_{boxes[(layer, head)][0]}",
                                        on_change=sync_checkboxes)
        ss[BOXES] = boxes
    live_panel(keep_mask, tiles, note)  # the slow part last: the grid (and its acknowledgement) is out already
    latency_panel(keep_mask)


toggling_area()

# ------------------------------------------------------------------------------------------ automatic masks
st.divider()
st.subheader("Automatic masks")
search = ui.engine("search")
recover = ui.engine("recover")
auto, budget, lsq = st.columns(3, gap="large")
with auto:
    st.markdown("**Prune the N least important heads**")
    if not metrics:
        ui.unavailable("Scoring", "score")
    else:
        chosen = st.selectbox("metric", metrics, index=metrics.index(metric) if metric in metrics else 0, key="prune_metric")
        n = st.slider("heads to prune", 0, total - 1, min(total // 2, total - 1), key="prune_n")
        if st.button("Prune N least important", type="primary"):
            try:
                if search is None:
                    raise ValueError("the search engine (headprune.search) is not available yet")
                with st.spinner(f"scoring heads with {chosen}…"):
                    s = ui.compute_scores(chosen)
                new = search.least_important(s, int(n), model=model)
                ui.set_keep(torch.as_tensor(new).bool())
                ss["last_action"] = f"pruned the {n} least important heads by {chosen}"
                st.rerun()
            except Exception as exc:
                ui.error("Could not prune by importance", exc)
with budget:
    st.markdown("**Auto-mask within an accuracy budget**")
    st.caption(f"Binary search over the heads in order of the selected metric, judged on the live set "
               f"({len(w.df)} examples). A small set is noisy: check the mask on held-out data (CLI: "
               "`headprune prune --budget`, `headprune eval --mask`).")
    drop = st.slider("largest accuracy drop (points)", 0.0, 20.0, 1.0, 0.5, key="budget_drop")
    judge_recovered = st.checkbox("judge each candidate after least-squares recovery (refit; slower, removes more)",
                                  key="budget_recover", disabled=recover is None)
    if st.button("Find the smallest model within budget"):
        try:
            if search is None or not metrics:
                raise ValueError("needs headprune.search and headprune.score, not available yet")
            with st.spinner("searching (evaluates many masks)…"):
                s = ui.compute_scores(metric or metrics[0])
                calib, described = ui.calibration_batches() if judge_recovered else (None, "")
                new, info = search.budget_mask(model, w.batches, s, max_drop=drop / 100, recover_batches=calib)
            new = torch.as_tensor(new).bool()
            ui.set_keep(new)
            if info["recovery"] is not None:
                ui.remember_recovery(info["recovery"], described)
            ss["last_action"] = (f"budget mask: {int(new.sum())} heads kept"
                                 + (" (least-squares recovered: see Retraining-free recovery)" if judge_recovered else ""))
            st.rerun()
        except Exception as exc:
            ui.error("Could not build a budget mask", exc)
with lsq:
    st.markdown("**Retraining-free recovery**")
    st.caption("Least squares, layer by layer, so each layer's output matches the dense model's on calibration "
               "data (no labels, no training; Kwon et al. 2022). *Refit* re-solves the kept heads' output "
               "projection and bias; *rescale* finds one scale per kept head. The mask stays; the Export page "
               "can write the recovered model.")
    method = st.radio("method", list(ui.RECOVERY_METHODS), format_func=ui.RECOVERY_METHODS.get, key="recover_method",
                      horizontal=True)
    if st.button("Recover"):
        try:
            if recover is None:
                raise ValueError("headprune.recover is not available yet")
            with st.spinner("solving per-layer least squares and re-evaluating…"):
                ui.recover_mask(ui.keep(), method)
        except Exception as exc:
            ui.error("Could not recover", exc)
    rec = ui.recovered_for(ui.keep())
    if rec:
        k, label = ui.quality_key(rec["result"])
        st.metric(f"{label} after recovery ({rec['method']})",
                  f"{rec['result'][k]:.1%}" if k != "loss" else f"{rec['result'][k]:.3f}",
                  delta=ui.delta(100 * (rec["result"][k] - ui.exact(ui.keep())[k]), " pts vs masked"))
        st.caption(f"Calibrated on {rec['calibrated_on']}; measured on the live set.")
