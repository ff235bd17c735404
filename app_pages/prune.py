"""Prune: click heads (or box-select blocks) to remove them and watch accuracy, cost and latency respond."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app_pages import _examples
from app_pages import _ui as ui
from headprune.evaluation.cost import flops_per_token, params_after
from headprune.figures import cost_bars_figure, head_grid_figure
from headprune.model import layout
from headprune.model.units import kv_cache_bytes_per_token
from headprune.workbench.ui_state import encode_mask, toggle_selection

RECOVERY_LABELS = {"weights": "refit the kept heads' output projection", "scales": "rescale each kept head"}
JUDGE_EXAMPLES = 1024  # held-out examples a budget search is judged on (apart from the live set and calibration)
bench = ui.bench()
w = ui.workload()
model = w.model
L, H = w.shape
total = L * H
group = layout.kv_group_size(model)
ss = st.session_state

st.title("Prune heads by hand")
st.caption("Click a head to remove it (click again to bring it back). To toggle a block, pick *Box Select* in the "
           "grid's toolbar and drag over it. "
           "Accuracy is recomputed exactly on the live set after every change; the instant estimate shows first.")


# ------------------------------------------------------------------------------------------ callbacks
def on_grid_select(key: str) -> None:
    """Toggle what the grid selection names, once: the next grid is a new widget (GRID_VERSION), so a
    rerun never sees this selection again and cannot toggle it twice."""
    state = ss.get(key)
    points = state.selection.points if state is not None else []
    new, changed = toggle_selection(ui.keep(), points)
    if changed:
        ui.set_keep(new)
        ss["last_change"] = changed


def on_checkbox(layer: int, head: int, key: str) -> None:
    new = ui.keep().clone()
    new[layer, head] = bool(ss[key])
    ui.set_keep(new)
    ss["last_change"] = [(layer, head)]


def apply(new: torch.Tensor, what: str) -> None:
    ui.set_keep(new)
    ss["last_action"] = what


def undo() -> None:
    try:
        ui.set_keep(ui.history().undo(), remember=False)
    except ValueError as exc:
        ss["last_action"] = f"⚠️ {exc}"


# ------------------------------------------------------------------------------------------ scores
metrics = ui.metric_names()
metric = ss.get("prune_metric") if ss.get("prune_metric") in metrics else ui.DEFAULT_METRIC
scores = ui.stored_scores(metric) if metric else None
scores = _examples.cheap_scores(metric) if scores is None else scores  # the grid is coloured on the first visit
grid_scores = ui.as_numpy(scores) if scores is not None else np.full((L, H), np.nan)


# ------------------------------------------------------------------------------------------ live panel
def live_panel(keep_mask: torch.Tensor) -> None:
    dense = w.dense
    key, label = ui.quality_key(dense)
    kept = int(keep_mask.sum())
    slot = st.empty()
    try:
        guess = bench.estimate(keep_mask) if kept < total else None
    except Exception as exc:  # an estimate is a courtesy; the exact value follows anyway
        guess = None
        slot.caption(f"(no instant estimate: {exc})")
    if guess is not None:
        slot.info(f"Instant estimate (first-order Taylor around the dense model): loss ≈ {guess:.3f} "
                  f"({guess - dense['loss']:+.3f} vs dense). Computing the exact value…")
    try:
        result, seconds = ui.timed(lambda: bench.exact(keep_mask))
    except Exception as exc:
        slot.empty()
        ui.error("Could not evaluate this mask", exc)
        return
    slot.empty()
    c1, c2, c3 = st.columns(3)  # two rows of three tiles: whole values and labels from 1280 px up
    if key != "loss":
        c1.metric(label, f"{100 * result[key]:.1f}%", delta=ui.delta(100 * (result[key] - dense[key]), " pts"), border=True)
    c2.metric("loss", f"{result['loss']:.3f}", delta=ui.delta(result["loss"] - dense["loss"], "", "+.3f"),
              delta_color="inverse", border=True)
    c3.metric("heads kept", f"{kept} / {total}", delta=ui.delta(kept - total, "", "+d"), delta_color="off", border=True)
    cost_panel(keep_mask, st.columns(3))
    rerun = result.get("rerun_from_layer")
    st.caption(f"Exact on {result.get('n', len(w.df))} examples in {seconds * 1000:.0f} ms"
               + (f" (re-ran layers ≥ {rerun})" if rerun is not None else "")
               + (f". Dense {label}: {dense[key]:.1%}." if key != "loss" else "."))


def cost_panel(keep_mask: torch.Tensor, columns) -> None:
    kv_dense, kv_now = kv_cache_bytes_per_token(model), kv_cache_bytes_per_token(model, keep_mask)
    f_dense, f_now = flops_per_token(model, None), flops_per_token(model, keep_mask)
    p_dense, p_now = layout.parameter_count(model), params_after(model, keep_mask)
    c1, c2, c3 = columns
    c1.metric("FLOPs / token", f"{f_now / 1e6:.1f} M", delta=ui.delta(100 * (f_now / f_dense - 1), "%"),
              delta_color="inverse", border=True)
    c2.metric("parameters", f"{p_now / 1e6:.2f} M", delta=ui.delta(100 * (p_now / p_dense - 1), "%"),
              delta_color="inverse", border=True)
    c3.metric("KV cache / token", f"{kv_now / 1024:.1f} KiB", delta=ui.delta(100 * (kv_now / kv_dense - 1), "%"),
              delta_color="inverse", border=True)


def latency_panel(keep_mask: torch.Tensor) -> None:
    st.subheader("Measured latency")
    measured = ss.setdefault("measured", {})
    code = encode_mask(keep_mask)
    c1, c2, c3 = st.columns([1, 1, 2])
    batch_size = c1.number_input("batch", 1, 256, 8, key="lat_batch")
    seq_len = c2.number_input("tokens", 8, 2048, 128, step=8, key="lat_seq")
    if c3.button("Measure latency (dense vs this mask, physically pruned)", key="measure"):
        try:
            with st.spinner("timing dense and pruned forward passes…"):
                measured[code] = bench.measure(keep_mask, batch_size=int(batch_size), seq_len=int(seq_len), repeats=10)
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
@st.fragment
def toggling_area() -> None:
    keep_mask = ui.keep()
    version = ss.get(ui.GRID_VERSION, 0)
    live_panel(keep_mask)  # the numbers first, full width; the grid below at its own (square-cell) width
    st.markdown(f"**{L} layers × {H} heads** · colour: "
                + (f"importance by `{metric}`" if scores is not None else "none yet"))
    if scores is None and st.button(f"Colour by importance ({metric})", key="prune_score"):
        try:
            with st.spinner(f"scoring heads by {metric}…"):
                ui.compute_scores(metric)
            st.rerun()
        except Exception as exc:
            ui.error("Could not score the heads", exc)
    fig = head_grid_figure(grid_scores, keep_mask.numpy(), kv_group_size=group if group > 1 else None,
                           score_label=metric or "score")
    key = f"prune_grid_{version}"
    st.plotly_chart(fig, key=key, on_select=lambda key=key: on_grid_select(key), selection_mode=("points", "box"),
                    width="content", config={"displayModeBar": True, "displaylogo": False, "scrollZoom": False,
                                             "modeBarButtons": [["select2d", "pan2d"]]})
    b = st.columns([1, 1, 1, 3])
    b[0].button("↶ Undo", on_click=undo, disabled=len(ui.history()) == 0, width="stretch",
                help=f"{len(ui.history())} earlier masks")
    b[1].button("Reset", on_click=apply, args=(torch.ones(L, H, dtype=torch.bool), "reset: all heads kept"),
                width="stretch")
    b[2].button("Invert", on_click=apply, args=(~keep_mask, "inverted the mask"), width="stretch")
    if ss.get("last_action"):
        b[3].caption(ss["last_action"])
    with st.expander("Keyboard-friendly: the same mask as checkboxes (Tab / Space)"):
        for layer in range(L):
            cols = st.columns([1.2] + [1] * H)
            cols[0].markdown(f"**layer {layer}**")
            for head in range(H):
                box_key = f"cb_{layer}_{head}_{version}"
                cols[head + 1].checkbox(f"{head}", value=bool(keep_mask[layer, head]), key=box_key,
                                        on_change=on_checkbox, args=(layer, head, box_key))
    latency_panel(keep_mask)
    _examples.sections(keep_mask)


toggling_area()

# ------------------------------------------------------------------------------------------ automatic masks
st.divider()
st.subheader("Automatic masks")
target = _examples.target_picker()
auto, budget, lsq = st.columns(3, gap="large")
with auto:
    st.markdown("**Prune the N least important heads**")
    chosen = st.selectbox("metric", metrics, index=metrics.index(metric) if metric in metrics else 0, key="prune_metric")
    n = st.slider("heads to prune", 0, total - 1, min(total // 2, total - 1), key="prune_n")
    if st.button("Prune N least important", type="primary"):
        try:
            with st.spinner(f"scoring heads with {chosen}…"):
                new = bench.least_important(chosen, int(n))
            ui.write_mask(new, target)
            ss["last_action"] = f"pruned the {n} least important heads by {chosen}" + (" into A" if target == "A" else "")
            st.rerun()
        except Exception as exc:
            ui.error("Could not prune by importance", exc)


def budget_job(progress, should_stop, metric=metric or metrics[0], drop=0.0, recovered=False, target="B"):
    """The budget search, judged on held-out examples apart from the live set (and from the calibration data)."""
    judge, judged_on = bench.other_examples(None, JUDGE_EXAMPLES, purpose="judgement")
    calib, described = bench.other_examples("train", 512, purpose="calibration") if recovered else (None, "")
    result = bench.budget(metric, drop / 100, judge_batches=judge, recover="weights" if recovered else None,
                          calib_batches=calib, progress=progress)
    return {"result": result, "judged_on": judged_on, "calibrated_on": described, "target": target}


with budget:
    st.markdown("**Auto-mask within an accuracy budget**")
    st.caption(f"Binary search over the heads in order of the selected metric, judged on up to {JUDGE_EXAMPLES} "
               "held-out examples, apart from the live set (a small judged set lets the search overfit). Check the "
               "result on the test split (CLI: `headprune eval --mask`).")
    drop = st.slider("largest accuracy drop (points)", 0.0, 20.0, 1.0, 0.5, key="budget_drop")
    judge_recovered = st.checkbox("judge each candidate after least-squares recovery (refit; slower, removes more)",
                                  key="budget_recover")
    if st.button("Find the smallest model within budget", disabled=ui.job("budget").snapshot()["status"] == "running"):
        ui.start_job("budget", lambda progress, should_stop: budget_job(progress, should_stop, drop=drop,
                                                                       recovered=judge_recovered, target=target))
        st.rerun()
    snap = ui.job_panel("budget", label="Budget search")
    found = snap["result"] if snap["status"] == "done" else None
    if found and ss.get("budget_applied") is not found:
        ss["budget_applied"] = found
        result = found["result"]
        ui.write_mask(result.keep, found["target"])
        if result.recovery is not None:
            bench.adopt_recovery(result.recovery, found["calibrated_on"])
        ss["last_action"] = (f"budget mask{' (into A)' if found['target'] == 'A' else ''}: {int(result.keep.sum())} heads kept"
                             + (" (least-squares recovered: see Retraining-free recovery)" if result.recovery else ""))
        st.rerun()
    if found:
        result = found["result"]
        key, label = ui.quality_key(bench.dense)
        st.caption(f"Judged on {found['judged_on']}: {label} {result.val:.1%} vs dense {result.dense:.1%} there "
                   f"(threshold {result.threshold:.1%}), {result.heads_removed} heads removed in {result.steps} "
                   "evaluations.")
with lsq:
    st.markdown("**Retraining-free recovery**")
    st.caption("Least squares, layer by layer, so each layer's output matches the dense model's on calibration "
               "data (no labels, no training; Kwon et al. 2022). *Refit* re-solves the kept heads' output "
               "projection and bias; *rescale* finds one scale per kept head. The mask stays; the Export page "
               "can write the recovered model.")
    method = st.radio("method", list(RECOVERY_LABELS), format_func=RECOVERY_LABELS.get, key="recover_method",
                      horizontal=True)
    if st.button("Recover"):
        try:
            with st.spinner("solving per-layer least squares and re-evaluating…"):
                bench.recover(ui.keep(), method)
        except Exception as exc:
            ui.error("Could not recover", exc)
    rec = bench.recovered_for(ui.keep())
    if rec and rec.result is not None:
        k, label = ui.quality_key(rec.result)
        st.metric(f"{label} after recovery ({rec.recovery.method})",
                  f"{rec.result[k]:.1%}" if k != "loss" else f"{rec.result[k]:.3f}",
                  delta=ui.delta(100 * (rec.result[k] - bench.exact(ui.keep())[k]), " pts vs masked"))
        st.caption(f"Calibrated on {rec.calibrated_on}; measured on the live set.")
