"""Compress to a target: the Export page's background job and the trajectory it draws (also on the Curves page).

Layout and session state only: the run is `Workbench.compress` (judged on validation examples apart from the live
set, least squares and distillation on training examples, the test split once at the end), the save is
`Workbench.save_compressed`, the figures are `headprune.figures.compress_figure` / `add_compress_trace`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import _ui as ui
from headprune.core.progress import format_seconds
from headprune.core.types import COMPRESS_UNITS
from headprune.figures import add_compress_trace, compress_figure
from headprune.search.compress_plan import CompressSettings

JOB = "compress"
UNIT_LABELS = {"head": "any head", "kv-group": "whole KV groups", "uniform": "same heads in every layer"}


def _settings(max_drop: float, seconds: float, target: int, unit: str) -> CompressSettings:
    return CompressSettings(max_drop=float(max_drop), time_budget=float(seconds),
                            target_heads=target / 100 if target else None, unit=unit)


def _start(settings: CompressSettings, folder: Path, replace: bool) -> None:
    bench = ui.bench()

    def run(progress, should_stop):
        model, result = bench.compress(settings, should_stop=should_stop, progress=progress)
        if result.stopped_by == "cancelled":
            return {"result": result, "saved": None}
        result, saved = bench.save_compressed(model, result, folder, overwrite=replace)
        return {"result": result, "saved": saved}

    ui.start_job(JOB, run)


def section(default_folder: str) -> None:
    """The Export page's "Compress to a target" section: options, the job (progress, ETA, Cancel), the result."""
    w = ui.workload()
    st.subheader("5 · Compress to a target")
    st.caption("Removes heads step by step — each step refitted by least squares, then distilled from the dense model "
               "— and keeps the smallest model whose accuracy on validation examples (apart from the live set) stays "
               "within your budget, within the time you give it. The test split is used once, at the end. It runs in "
               "the background; the pruned model is written to the folder below.")
    if w.split is None:
        st.info("Compressing needs data with train, validation and test splits (a file needs a 'split' column).")
        return
    c1, c2, c3, c4 = st.columns(4)
    max_drop = c1.number_input("accuracy you may lose (points)", 0.0, 100.0, 1.0, step=0.5, key="compress_drop")
    seconds = c2.number_input("time budget (s)", 30, 86400, 600, step=60, key="compress_seconds")
    target = c3.number_input("stop at % of heads removed (0: no target)", 0, 100, 0, step=5, key="compress_target")
    unit = c4.selectbox("remove", COMPRESS_UNITS, format_func=UNIT_LABELS.get, key="compress_unit")
    folder = st.text_input("Folder", value=f"{default_folder}-compressed", key="compress_folder")
    replace = st.checkbox("Replace it if it is an earlier headprune export", key="compress_replace")
    running = ui.job(JOB).snapshot()["status"] == "running"
    if st.button("Compress", type="primary", disabled=running, key="compress_start"):
        try:
            target_path = ui.output_path(folder, "pruned-model", replace=replace)
            _start(_settings(max_drop, seconds, int(target), unit), target_path, replace)
            st.rerun()
        except Exception as exc:
            ui.error("Could not start compressing", exc)
    snap = ui.job_panel(JOB, label="Compressing")
    if snap["status"] in ("done", "cancelled") and snap["result"]:
        _show(snap["result"])


def _show(done: dict) -> None:
    result, saved = done["result"], done["saved"]
    if result.stopped_by == "cancelled":
        st.warning(f"Cancelled after {len(result.trajectory)} steps; nothing was saved.")
        return
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("heads kept", f"{result.heads_total - result.heads_removed} of {result.heads_total}",
              delta=f"-{result.heads_removed_frac:.0%}", delta_color="off", border=True)
    c2.metric("test accuracy", f"{result.test:.1%}", delta=ui.delta(100 * (result.test - result.dense_test), " pts"),
              border=True)
    free = result.retraining_free
    c3.metric("retraining-free (least squares only)", f"{free['heads_removed']} removed",
              delta=ui.delta(100 * (free["test"] - result.dense_test), " pts test"), border=True)
    c4.metric("time", format_seconds(result.seconds), delta=f"stopped: {result.stopped_by}", delta_color="off",
              border=True)
    st.plotly_chart(figure(result), key="compress_fig")
    (st.success if saved.matches else st.error)(
        f"Wrote {saved.path}: reloaded outputs {'match' if saved.matches else 'DIFFER'} (max |Δlogit| = "
        f"{saved.max_abs_diff:.2e}); parameters {saved.params_before / 1e6:.2f} M → {saved.params_after / 1e6:.2f} M; "
        f"the report is compress_report.json in the folder.")
    with st.expander("The trajectory"):
        rows = [{**dict(row), "slice_vals": " → ".join(f"{v:.4f}" for v in row.slice_vals)}
                for row in result.trajectory]
        st.dataframe(pd.DataFrame(rows).rename(columns={"slice_vals": "val after each slice"}), hide_index=True)


def figure(result):
    return compress_figure(result.trajectory, heads_total=result.heads_total, dense=result.dense_val,
                           threshold=result.threshold, test=result.test, dense_test=result.dense_test)


def overlay(fig):
    """The Curves page's figure with this session's last compress run on it (if any)."""
    result = ui.bench().compressed
    if result is None or not any(row.accepted for row in result.trajectory):
        return fig
    st.caption(f"Red dotted: your last compress run's kept models, judged on its {result.examples['judge']} "
               f"validation examples (dense there {result.dense_val:.1%}); the curves use the live set.")
    return add_compress_trace(fig, result.trajectory, heads_total=result.heads_total)
