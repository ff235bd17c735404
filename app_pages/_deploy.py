"""Deploy sections of the Prune and Export pages: where the current mask's pruned model loads (with a one-click
runtime-safe mask), latency in PyTorch and ONNX Runtime, and the ONNX export job. Layout only: every number
comes from the session's Workbench (`ui.bench()`)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch

from app_pages import _ui as ui
from headprune.core.progress import format_seconds
from headprune.deploy import LatencySettings
from headprune.figures import cost_bars_figure
from headprune.workbench.ui_state import encode_mask

RUNTIMES = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "both": "both"}
REPEATS = 10  # timed passes per latency check (medians)
NO_KV_CACHE = ("No KV cache in this first version: decoders run full-sequence forward passes (prefill), "
               "not token-by-token generation.")
SAFE = "runtime_safe_made"  # (mask code, RuntimeSafeMask) of the last "Make it runtime-safe"
MEASURED, MEASURED_ORT = "measured", "measured_onnx"  # latency results by mask code (PyTorch, ONNX Runtime)


# ------------------------------------------------------------------------------------------ loads in
def _cost_text(made) -> str:
    """What "Make it runtime-safe" changed and what it cost on the live set."""
    uniform, before, after = made.uniform, made.before, made.after
    key, label = ui.quality_key(after)
    if key == "loss":
        change = f"{before[key]:.3f} → {after[key]:.3f} ({after[key] - before[key]:+.3f})"
    else:
        change = f"{before[key]:.1%} → {after[key]:.1%} ({100 * (after[key] - before[key]):+.1f} pts)"
    return (f"Made runtime-safe: {uniform.heads_per_layer} heads in every layer ({uniform.kv_heads_per_layer} KV), "
            f"{len(uniform.removed)} heads removed and {len(uniform.added)} brought back, chosen by `{made.metric}` "
            f"importance; {label} {change} on the live set. Undo (Prune page) restores the earlier mask.")


def loads_in_panel(keep: torch.Tensor, *, key: str) -> None:
    """Badges: where the model pruned by `keep` loads, the reason for each ✘, and "Make it runtime-safe"."""
    bench = ui.bench()
    try:
        verdicts = bench.loads_in(keep)
    except Exception as exc:
        ui.error("Could not check where this mask loads", exc)
        return
    st.markdown("**Loads in** " + " ".join(f":{'green' if v.ok else 'red'}-badge[{v.label} {'✔' if v.ok else '✘'}]"
                                            for v in verdicts.verdicts))
    for verdict in verdicts.verdicts:
        if not verdict.ok:
            st.caption(f"✘ {verdict.label}: {verdict.reason}")
    ss = st.session_state
    made = ss.get(SAFE)
    if made is not None and made[0] == encode_mask(keep):
        st.caption(_cost_text(made[1]))
    if verdicts.runtime_safe:
        return
    blocker = bench.runtime_safe_blocker(keep)
    if blocker is not None:
        st.caption(f"No runtime-safe mask is near this one ({blocker}); ONNX Runtime and headprune load it as it is.")
        return
    metric = ss.get("prune_metric") or ui.DEFAULT_METRIC
    if st.button("Make it runtime-safe", key=f"{key}_runtime_safe",
                 help=f"the nearest mask with the same heads in every layer (whole KV groups), by {metric} importance; "
                      "its accuracy cost is shown"):
        try:
            with st.spinner(f"rounding to the same heads in every layer by {metric} and evaluating both masks…"):
                result = bench.runtime_safe(keep, metric=metric)
            ui.set_keep(result.keep)
            ss[SAFE] = (encode_mask(result.keep), result)
            st.rerun()
        except Exception as exc:
            ui.error("Could not make the mask runtime-safe", exc)


# ------------------------------------------------------------------------------------------ latency
def _latency_line(name: str, result: dict) -> str:
    d, p = result["dense"], result["pruned"]
    return (f"**{RUNTIMES[name]}** ({result['batch_size']} × {result['seq_len']} tokens, {result['threads']} threads): "
            f"dense {d['latency_ms_median']:.1f} ms (p10–p90 {d['latency_ms_p10']:.1f}–{d['latency_ms_p90']:.1f}) · "
            f"pruned {p['latency_ms_median']:.1f} ms (p10–p90 {p['latency_ms_p10']:.1f}–{p['latency_ms_p90']:.1f}) · "
            f"time ratio {result['time_ratio']:.2f} vs FLOP ratio {result['flop_ratio']:.2f} · "
            f"speed-up {result['speedup']:.2f}×")


def latency_panel(keep: torch.Tensor) -> None:
    """Dense vs physically pruned latency of `keep` in PyTorch, ONNX Runtime or both, at the user's batch size and
    sequence length, with the overhead-bound warning."""
    st.subheader("Measured latency")
    ss = st.session_state
    stores = {"torch": ss.setdefault(MEASURED, {}), "onnxruntime": ss.setdefault(MEASURED_ORT, {})}
    code = encode_mask(keep)
    c1, c2, c3, c4 = st.columns([1, 1, 2, 2])
    batch_size = c1.number_input("batch", 1, 256, 8, key="lat_batch")
    seq_len = c2.number_input("tokens", 8, 2048, 128, step=8, key="lat_seq")
    runtime = c3.radio("runtime", list(RUNTIMES), format_func=RUNTIMES.get, key="lat_runtime", horizontal=True)
    if c4.button("Measure latency (dense vs this mask, physically pruned)", key="measure"):
        try:
            with st.spinner("timing dense and pruned forward passes"
                            + ("" if runtime == "torch" else " (exporting both to ONNX first)") + "…"):
                result = ui.bench().measure(keep, batch_size=int(batch_size), seq_len=int(seq_len), repeats=REPEATS,
                                            runtime=runtime)
            for name, found in (result if runtime == "both" else {runtime: result}).items():
                stores[name][code] = found
        except Exception as exc:
            ui.error("Could not measure latency", exc)
    results = {name: store[code] for name, store in stores.items() if code in store}
    if not results:
        st.caption("Not measured for this mask yet." + (" (Earlier masks were.)" if any(stores.values()) else ""))
        return
    for name, result in results.items():
        st.markdown(_latency_line(name, result))
        if result.get("warning"):
            st.warning(result["warning"])
    if "onnxruntime" in results:
        st.caption(f"ONNX Runtime: both models exported to ONNX, CPU. {NO_KV_CACHE}")
    first = next(iter(results.values()))  # PyTorch when measured
    d, p = first["dense"], first["pruned"]
    fig = cost_bars_figure({"params": d["params"], "flops_per_token": d["flops_per_token"], "latency_ms": d["latency_ms_median"]},
                           {"params": p["params"], "flops_per_token": p["flops_per_token"], "latency_ms": p["latency_ms_median"]})
    st.plotly_chart(fig, key="cost_bars")


# ------------------------------------------------------------------------------------------ ONNX export
def _onnx_result(found: dict, code: str) -> None:
    """Parity, and ONNX Runtime time vs FLOP ratio, of a finished export."""
    done = found["export"]
    parity = done.parity
    (st.success if parity.ok else st.error)(
        f"Wrote {done.path} ({done.file_bytes / 1e6:.1f} MB) in {format_seconds(done.seconds)}: ONNX Runtime "
        f"{'matches' if parity.ok else 'DIFFERS from'} PyTorch on {done.meta['parity_examples']}."
        + ("" if found["mask"] == code else " (Exported for an earlier mask.)"))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("max |Δ logit|", f"{parity.max_abs_diff:.1e}", border=True)
    c2.metric("predictions agree", f"{parity.agreement:.1%}", border=True)
    c3.metric("FLOP ratio", f"{done.flop_ratio:.2f}", border=True)
    timed = done.latency
    if timed:
        c4.metric("ONNX Runtime time ratio", f"{timed['time_ratio']:.2f}", border=True)
        s = timed["settings"]
        st.caption(f"ONNX Runtime, {s['batch_size']} × {s['seq_len']} tokens, {s['threads']} threads, median of "
                   f"{s['repeats']}: dense {timed['dense']['latency_ms_median']:.1f} ms → pruned "
                   f"{timed['pruned']['latency_ms_median']:.1f} ms.")
        if timed["warning"]:
            st.warning(timed["warning"])
    st.caption(f"{NO_KV_CACHE} The sidecar {Path(done.sidecar).name} records the kept heads, versions and these "
               "numbers.")


def onnx_section(keep: torch.Tensor, *, default_path: str) -> None:
    """The ONNX file of `keep`'s pruned model: path (checked before any work), recovery, and a background job that
    exports, checks parity and times ONNX Runtime."""
    bench = ui.bench()
    st.caption("Heads are physically removed; the graph takes token ids with any batch size and length and returns "
               "logits. It is checked in ONNX Runtime against PyTorch on the first live examples and, if you like, "
               f"timed there dense vs pruned. {NO_KV_CACHE}")
    path, replace, recovered = ui.output_fields("onnx", "File", default_path, path_key="onnx_path", keep=keep,
                                                replace_label="Replace it if it is an earlier headprune ONNX export")
    time_it = st.checkbox("Also time ONNX Runtime, dense vs pruned (exports the dense model too)", value=True,
                          key="onnx_time")
    c1, c2 = st.columns(2)
    batch_size = c1.number_input("batch", 1, 256, 8, key="onnx_batch", disabled=not time_it)
    seq_len = c2.number_input("tokens", 8, 2048, 128, step=8, key="onnx_seq", disabled=not time_it)
    if st.button("Export to ONNX", type="primary", disabled=ui.job("onnx").snapshot()["status"] == "running"):
        try:
            target = ui.output_path(path, "onnx", replace=replace)
        except Exception as exc:
            ui.error("Could not export to ONNX", exc)
        else:
            settings = LatencySettings(int(batch_size), int(seq_len), REPEATS) if time_it else None
            recovery = recovered.recovery if recovered else None
            mask, code = keep.clone(), encode_mask(keep)

            def run(progress):
                return {"mask": code, "export": bench.export_onnx(mask, target, recovery=recovery, overwrite=replace,
                                                                  latency=settings, progress=progress)}

            ui.start_job("onnx", run, pass_should_stop=False)
            st.rerun()
    snap = ui.job_panel("onnx", label="ONNX export")
    if snap["status"] == "done" and snap["result"]:
        _onnx_result(snap["result"], encode_mask(keep))
