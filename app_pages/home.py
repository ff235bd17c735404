"""Learn: what an attention head is, and a six-step walkthrough that shows head redundancy on the loaded model."""
from __future__ import annotations

import streamlit as st
import torch

from app_pages import _ui as ui
from app_pages._examples import md
from headprune.figures import head_grid_figure
from headprune.model import layout

bench = ui.bench()
w = ui.workload()
model = w.model
L, H = w.shape
total = L * H
half = total // 2
group = layout.kv_group_size(model)
ss = st.session_state
tour = ss.setdefault("tour", {})
if tour.get("for") != w.key:
    tour.clear()
    tour["for"] = w.key
qkey, qlabel = ui.quality_key(w.dense)


def fmt(result: dict) -> str:
    return f"{result[qkey]:.1%}" if qkey != "loss" else f"{result[qkey]:.3f}"


st.title("How many attention heads does a model need?")
st.markdown(f"""
A Transformer reads text with **attention heads**: small units that each decide, for every word, which other words
to look at. The loaded model, **{w.loaded.model_id}**, has **{L} layers × {H} heads = {total} heads**.
Research found that many heads can be switched off with little or no loss (Michel et al. 2019: about 40% of BERT's
heads), while a few do the heavy lifting (Voita et al. 2019). This tool lets you see which, and remove them.

Six steps, a click or none each, on the loaded model and {len(w.df)} examples. Dense {qlabel}: **{fmt(w.dense)}**.
""")
progress_slot = st.empty()  # filled after the steps, so a click in them counts at once
metric = ui.DEFAULT_METRIC


def step(number: int, title: str, ready: bool, body) -> None:
    with st.container(border=True):
        st.markdown(f"#### {number} · {title}")
        if not ready:
            st.caption("Do the step above first.")
            return
        body()


def score_step() -> None:
    st.write("Each head gets an importance score: how much the loss would change if the head were turned "
             f"down a little (`{metric}`: {ui.metric_description(metric)}).")
    if st.button("Score the heads", type="primary", key="tour_score"):
        try:
            with st.spinner("one backward pass over the examples…"):
                tour["scores"] = ui.compute_scores(metric)
        except Exception as exc:
            ui.error("Could not score the heads", exc)
    if "scores" in tour:
        st.success(f"Scored {total} heads by {metric}.")


def read_step() -> None:
    scores = ui.as_numpy(tour["scores"])
    st.markdown("**Importance per head**: bright = the model leans on it, dark = it barely matters.")
    fig = head_grid_figure(scores, kv_group_size=group if group > 1 else None, score_label=metric)
    st.plotly_chart(fig, key="tour_grid", width="content", config={"displayModeBar": False})
    flat = torch.as_tensor(scores).flatten().nan_to_num(0).clamp(min=0)
    share = float(flat.sort(descending=True).values[: max(1, total // 4)].sum() / flat.sum().clamp(min=1e-12))
    st.write(f"The top quarter of heads carry **{share:.0%}** of the total importance. Most of the grid is dark: "
             "those heads are candidates to remove.")
    if st.button("Got it", key="tour_read"):
        tour["read"] = True


def half_step() -> None:
    st.write(f"Switch off the {half} heads with the lowest scores and measure the {qlabel} again.")
    if st.button(f"Remove the least important half ({half} heads)", type="primary", key="tour_half"):
        try:
            keep = bench.least_important(metric, half)
            tour["half"] = (keep, bench.exact(keep))
        except Exception as exc:
            ui.error("Could not remove the heads", exc)
    if "half" in tour:
        keep, result = tour["half"]
        c1, c2 = st.columns(2)
        c1.metric(f"{qlabel} with {int(keep.sum())} heads", fmt(result),
                  delta=ui.delta(100 * (result[qkey] - w.dense[qkey]), f" pts vs all {total}"), border=True)
        if c2.button("Open this mask on the Prune page", key="tour_open"):
            ui.set_keep(keep)
            st.switch_page("app_pages/prune.py")


def lost_step() -> None:
    keep, _ = tour["half"]
    try:
        changes = bench.what_changed(None, keep, top=3)
    except Exception as exc:
        ui.error("Could not compare the examples", exc)
        return
    if changes.task == "classification":
        st.write(f"Removing {half} heads changed the answer on {len(changes.fixed) + len(changes.broken) + len(changes.changed)}"
                 f" of {changes.n} examples: **{len(changes.broken)} now wrong** that were right, {len(changes.fixed)} "
                 "now right that were wrong. Some that it now gets wrong, and the removed heads that would help most "
                 "if brought back alone:")
        lost = [(f.index, f.text, f"gold **{f.label}** · answer {f.before} → **{f.after}** · P({f.label}) "
                                  f"{f.gold_prob_before:.0%} → {f.gold_prob_after:.0%}") for f in changes.broken[:3]]
    else:
        st.write("The examples whose loss rose most, and the removed heads that would help most if brought back alone:")
        lost = [(m.index, m.text, f"loss {m.before:.2f} → {m.after:.2f}") for m in changes.loss_movers if m.delta > 0]
    if not lost:
        st.success("Nothing was lost on these examples.")
    for row, text, what in lost:
        try:
            heads = bench.responsible(row, keep, top=2)
        except Exception as exc:
            ui.error("Could not find the heads responsible", exc)
            return
        blame = ", ".join(f"layer {e.layer} head {e.head} (back alone: loss −{e.gain:.2f})" for e in heads if e.gain > 0)
        st.markdown(f"> {md(text)}\n\n{what}. " + (f"Most responsible: {blame}." if blame else "No single head restores it."))
    st.caption("Inspect any example and the attention of its heads under *What changed* on the Prune page.")


def random_step() -> None:
    st.write("Is that because the scores are good, or would any half do? Remove a random half instead.")
    if st.button("Remove a random half", type="primary", key="tour_random"):
        try:
            keep = bench.least_important("random", half, seed=int(ss.get("tour_seed", 0)))
            tour["random"] = (keep, bench.exact(keep))
        except Exception as exc:
            ui.error("Could not remove a random half", exc)
    if "random" in tour:
        (_, best), (_, rand) = tour["half"], tour["random"]
        c1, c2 = st.columns(2)
        c1.metric("least important half removed", fmt(best), border=True)
        c2.metric("random half removed", fmt(rand), delta=ui.delta(100 * (rand[qkey] - best[qkey]), " pts vs by importance"),
                  border=True)
        if rand[qkey] < best[qkey]:
            st.write("The scores find the redundant heads: removing heads blindly costs more.")
        else:
            st.write("Here a random half did as well or better: on this model and data the scores carry little "
                     "signal. Try another random draw, more examples, or another metric on the Importance page.")
            if st.button("Draw another random half", key="tour_redraw"):
                ss["tour_seed"] = int(ss.get("tour_seed", 0)) + 1
                tour.pop("random", None)
                st.rerun()


def recover_step() -> None:
    st.write("Without any training, re-solve how the heads that are left feed each layer's output so it matches the "
             "full model's as closely as possible (least squares on a few hundred unlabelled examples; after Kwon "
             "et al. 2022).")
    if st.button("Recover", type="primary", key="tour_recover"):
        try:
            with st.spinner("solving a least-squares problem per layer…"):
                tour["recovered"] = bench.recover(tour["half"][0], "weights").result
        except Exception as exc:
            ui.error("Could not recover", exc)
    if "recovered" in tour:
        (_, best), rec = tour["half"], tour["recovered"]
        c1, c2, c3 = st.columns(3)
        c1.metric(f"all {total} heads", fmt(w.dense), border=True)
        c2.metric(f"{total - half} heads", fmt(best), border=True)
        c3.metric(f"{total - half} heads, recovered", fmt(rec), delta=ui.delta(100 * (rec[qkey] - best[qkey]), " pts"),
                  border=True)
        lost = 100 * (w.dense[qkey] - max(best[qkey], rec[qkey]))
        st.success(f"Half the heads gone, {abs(lost):.1f} points of {qlabel} {'lost' if lost > 0 else 'gained'}: that "
                   "is head redundancy. Try your own masks on the **Prune** page, compare metrics on **Importance**, "
                   "and see every fraction on **Curves**.")


step(1, "Score the heads", True, score_step)
step(2, "Read the heatmap", "scores" in tour, read_step)
step(3, "Remove the least important half", bool(tour.get("read")), half_step)
step(4, "What did we lose?", "half" in tour, lost_step)
step(5, "Compare with removing a random half", "half" in tour, random_step)
step(6, "Recover without retraining", "random" in tour, recover_step)
done = sum(k in tour for k in ("scores", "half", "random", "recovered")) + bool(tour.get("read")) + ("half" in tour)
progress_slot.progress(done / 6, text=f"{done} of 6 steps done")
