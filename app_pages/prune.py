"""Prune: click heads (or drag over blocks) to remove them and watch accuracy, cost and latency respond."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app_pages import _deploy as deploy
from app_pages import _examples, _grid
from app_pages import _ui as ui
from headprune.evaluation.cost import flops_per_token, params_after
from headprune.model import layout
from headprune.model.units import kv_cache_bytes_per_token
from headprune.recovery.lsq import feed_forward_refit_applies

RECOVERY_LABELS = {"weights": "refit the kept heads' output projection", "scales": "rescale each kept head"}
JUDGE_EXAMPLES = 1024  # held-out examples a budget search is judged on (apart from the live set and calibration)
GRID, BOXES = "prune_grid", "prune_checkboxes"  # the head grid's widget key; checkbox versions (sync_checkboxes)
bench = ui.bench()
w = ui.workload()
model = w.model
L, H = w.shape
total = L * H
group = layout.kv_group_size(model)
ss = st.session_state

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
    ui.set_keep(new)  # first: a change clears the caption of the one before
    ss[ui.LAST_ACTION] = what


def undo() -> None:
    try:
        ui.set_keep(ui.history().undo(), remember=False)
    except ValueError as exc:
        ss[ui.LAST_ACTION] = f"⚠️ {exc}"


# ------------------------------------------------------------------------------------------ scores
metrics = ui.metric_names()
metric = ss.get("prune_metric") if ss.get("prune_metric") in metrics else ui.DEFAULT_METRIC
scores = ui.stored_scores(metric)
scores = _examples.cheap_scores(metric) if scores is None else scores  # the grid is coloured on the first visit
grid_scores = ui.as_numpy(scores) if scores is not None else np.full((L, H), np.nan)


# ------------------------------------------------------------------------------------------ live panel
def estimate_note(keep_mask: torch.Tensor) -> str:
    """The line under the tiles while the exact value is computed: the instant (first-order) estimate."""
    try:
        guess = bench.estimate(keep_mask) if int(keep_mask.sum()) < total else None
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
        result, seconds = ui.timed(lambda: bench.exact(keep_mask))
    except Exception as exc:
        note.caption("No exact value for this mask.")
        with tiles:
            ui.error("Could not evaluate this mask", exc)
        return
    rerun = result.get("rerun_from_layer")
    note.caption(f"Exact on {result.get('n', len(w.df))} examples in {seconds * 1000:.0f} ms"
                 + (f" (re-ran layers ≥ {rerun})" if rerun is not None else "")
                 + (f". Dense {label}: {dense[key]:.1%}." if key != "loss" else "."))
    c1, c2, c3 = tiles.columns(3)  # two rows of three tiles: whole values and labels from 1280 px up
    if key != "loss":
        c1.metric(label, f"{100 * result[key]:.1f}%", delta=ui.delta(100 * (result[key] - dense[key]), " pts"),
                  border=True, height="stretch")
    c2.metric("loss", f"{result['loss']:.3f}", delta=ui.delta(result["loss"] - dense["loss"], "", "+.3f"),
              delta_color="inverse", border=True, height="stretch")
    c3.metric("heads kept", f"{kept} / {total}", delta=ui.delta(kept - total, "", "+d") or "±0", delta_color="off",
              delta_arrow="off", border=True, height="stretch")  # always a delta line: the row keeps its height
    cost_panel(keep_mask, tiles.columns(3))


def cost_panel(keep_mask: torch.Tensor, columns) -> None:
    kv_dense, kv_now = kv_cache_bytes_per_token(model), kv_cache_bytes_per_token(model, keep_mask)
    f_dense, f_now = flops_per_token(model, None), flops_per_token(model, keep_mask)
    p_dense, p_now = layout.parameter_count(model), params_after(model, keep_mask)
    tiles = [("FLOPs / token", f"{f_now / 1e6:.1f} M", f_now / f_dense),
             ("parameters", f"{p_now / 1e6:.2f} M", p_now / p_dense),
             ("KV cache / token", f"{kv_now / 1024:.1f} KiB", kv_now / kv_dense)]
    for column, (label, value, ratio) in zip(columns, tiles):
        change = ui.delta(100 * (ratio - 1), "%")
        # Always a delta line ("±0%" when unchanged): the row keeps its height and the grid below never moves.
        column.metric(label, value, delta=change or "±0%", delta_color="inverse" if change else "off",
                      delta_arrow="auto" if change else "off", border=True, height="stretch")


def latency_panel(keep_mask: torch.Tensor) -> None:
    """The mask's deploy view (app_pages/_deploy.py): where its pruned model loads, then its measured latency."""
    deploy.loads_in_panel(keep_mask, key="prune")
    deploy.latency_panel(keep_mask)


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
    if scores is None and st.button(f"Colour by importance ({metric})", key="prune_score"):
        try:
            with st.spinner(f"scoring heads by {metric}…"):
                ui.compute_scores(metric)
            st.rerun()
        except Exception as exc:
            ui.error("Could not score the heads", exc)
    _grid.head_grid(GRID, keep_mask, grid_scores, on_event=set_heads, kv_group_size=group, score_label=metric)
    b = st.columns([1, 1, 1, 3])
    b[0].button("↶ Undo", on_click=undo, disabled=len(ui.history()) == 0, width="stretch",
                help=f"{len(ui.history())} earlier masks")
    b[1].button("Reset", on_click=apply, args=(torch.ones(L, H, dtype=torch.bool), "reset: all heads kept"),
                width="stretch")
    b[2].button("Invert", on_click=apply, args=(~keep_mask, "inverted the mask"), width="stretch")
    if ss.get(ui.LAST_ACTION):
        b[3].caption(ss[ui.LAST_ACTION])
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
            ss[ui.LAST_ACTION] = f"pruned the {n} least important heads by {chosen}" + (" into A" if target == "A" else "")
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
        ss[ui.LAST_ACTION] = (f"budget mask{' (into A)' if found['target'] == 'A' else ''}: {int(result.keep.sum())} heads kept"
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
    ffn = method == "weights" and feed_forward_refit_applies(bench.model) and st.checkbox(
        "also refit the feed-forward outputs", key="recover_ffn",
        help="Each layer's feed-forward output projection is refitted too, so the sum the layer normalises matches "
             "the dense model's (post-norm encoders). More to fit: slower, and it wants more calibration data.")
    if st.button("Recover"):
        try:
            with st.spinner("solving per-layer least squares and re-evaluating…"):
                bench.recover(ui.keep(), method, feed_forward=ffn)
        except Exception as exc:
            ui.error("Could not recover", exc)
    rec = bench.recovered_for(ui.keep())
    if rec and rec.result is not None:
        k, label = ui.quality_key(rec.result)
        st.metric(f"{label} after recovery ({rec.recovery.method}{' + feed-forward' if rec.recovery.feed_forward else ''})",
                  f"{rec.result[k]:.1%}" if k != "loss" else f"{rec.result[k]:.3f}",
                  delta=ui.delta(100 * (rec.result[k] - bench.exact(ui.keep())[k]), " pts vs masked"))
        st.caption(f"Calibrated on {rec.calibrated_on}; measured on the live set.")
