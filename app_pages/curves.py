"""Curves: quality vs fraction of heads pruned, per metric (one-shot and iterative), against random orders."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages import _compress
from app_pages import _ui as ui
from headprune.figures import curves_figure

w = ui.workload()
model = w.model
L, H = w.shape
total = L * H

st.title("Pruning curves")
st.caption("How much quality is left after removing the least important X% of heads, for each metric. One-shot "
           "scores once; iterative re-scores under the mask after every step (Michel et al. 2019). The grey band is the "
           "range over random orders: a metric is only useful where it stays above it. ★ = your current mask.")
bench = ui.bench()
metrics = ui.metric_names()
c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
chosen = c1.multiselect("metrics", metrics, default=[m for m in ("gradient", "magnitude") if m in metrics], key="curve_metrics")
modes = c2.multiselect("modes", ["one-shot", "iterative"], default=["one-shot"], key="curve_modes",
                       help="iterative re-scores under the current mask at each step (slower)")
step = c3.selectbox("step", [0.05, 0.1, 0.2], index=1, format_func=lambda f: f"{f:.0%}", key="curve_step")
seeds = c4.number_input("random orders", 2, 20, 5, key="curve_seeds")
fractions = [float(f) for f in np.round(np.arange(0, 1 + 1e-9, step), 4) if round(f * total) < total]
request = dict(metrics=list(chosen), modes=list(modes), fractions=fractions, step=step, seeds=int(seeds))
result = bench.curves(**request, only_stored=True)

if st.button("Compute curves", type="primary", disabled=not chosen or not modes):
    ui.start_job("curves", lambda progress, should_stop, request=request: bench.curves(**request, progress=progress))
    st.rerun()
ui.job_panel("curves", label="Computing curves")

if result is None:
    st.info("Choose metrics and press **Compute curves** (about one exact evaluation per point; the live set has "
            f"{len(w.df)} examples).")
else:
    keep = ui.keep()
    y = "accuracy" if "accuracy" in result["curves"].columns and "accuracy" in w.dense else "loss"
    try:
        current = (1 - int(keep.sum()) / total, bench.exact(keep)[y])
    except Exception as exc:
        ui.error("Could not evaluate the current mask", exc)
        current = None
    fig = curves_figure(result["curves"], baseline=result["baseline"] if y == "accuracy" else None, current=current,
                        dense_accuracy=w.dense.get(y), y=y)
    st.plotly_chart(_compress.overlay(fig) if y == "accuracy" else fig, key="curves_fig")
    with st.expander("The numbers"):
        st.dataframe(result["curves"], hide_index=True)
