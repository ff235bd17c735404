"""Export: the mask as JSON with everything needed to reproduce it, the pruned model folder, recovery fine-tune."""
from __future__ import annotations

import json
import re
from pathlib import Path

import streamlit as st

from app_pages import _compress, _report
from app_pages import _deploy as deploy
from app_pages import _ui as ui
from headprune.core.progress import format_seconds
from headprune.model.schema import mask_from_dict, mask_to_dict
from headprune.model.storage import save_pruned
from headprune.workbench.ui_state import encode_mask

bench = ui.bench()
w = ui.workload()
model = w.model
keep = ui.keep()
L, H = w.shape
ss = st.session_state
code = encode_mask(keep)
TRAIN_EXAMPLES_MAX = 50000

st.title("Export")
kept = int(keep.sum())
st.caption(f"Current mask: {kept} of {L * H} heads kept. Everything below uses it.")
deploy.loads_in_panel(keep, key="export")

try:
    after = bench.exact(keep)
except Exception as exc:
    ui.error("Could not evaluate the current mask", exc)
    st.stop()
metric = ss.get("prune_metric") or ui.DEFAULT_METRIC
scores_info = {"metric": metric, "options": {"normalise_layers": False, "global_minmax": False},
               "scored_on": f"{len(w.df)} live examples"}
latency = ss.get("measured", {}).get(code)


@st.cache_data(show_spinner=False, max_entries=32)
def _record_json(workload_key: str, mask_code: str, after_items: tuple, latency_json: str, scores_json: str) -> str:
    """The mask JSON (cached per workload and mask: the model fingerprint hashes every weight)."""
    record = bench.mask_record(keep, after=dict(after_items), scores=json.loads(scores_json),
                               latency=json.loads(latency_json) or None, versions={"streamlit": st.__version__})
    body = mask_to_dict(keep, model, model_id=w.loaded.model_id, meta=record)
    return json.dumps(body, indent=2, default=float) + "\n"


# ------------------------------------------------------------------------------------------ mask JSON
st.subheader("1 · Mask file")
after_items = tuple(sorted((k, v) for k, v in after.items() if isinstance(v, (int, float))))
text = _record_json(w.key, code, after_items, json.dumps(latency or {}, default=str), json.dumps(scores_info))
name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(w.loaded.model_id).name or "model")
left, right = st.columns([1, 2])
with left:
    st.download_button("Download mask JSON", text, file_name=f"{name}-{kept}heads.mask.json", mime="application/json",
                       type="primary", icon="⬇️")
    record = json.loads(text)["meta"]
    key, label = ui.quality_key(after)
    if key in record["before"]:
        st.metric(f"{label} after / before", f"{record['after'][key]:.1%}" if key != "loss" else f"{record['after'][key]:.3f}",
                  delta=ui.delta(100 * (record['after'][key] - record['before'][key]), " pts"), border=True)
    if latency is None:
        st.caption("Latency is not in the file yet: measure it on the Prune page to include it.")
with right:
    with st.expander("What the file holds", expanded=False):
        st.code(text if len(text) < 6000 else text[:6000] + "\n…", language="json")

st.markdown("Re-open it from the command line with `headprune eval --model … --mask FILE`, or load it here:")
upload = st.file_uploader("Load a mask JSON", type=["json"], key="mask_upload")
try:
    record = ui.new_json_upload(upload, "mask_upload_done")
    if record is not None:
        ui.set_keep(mask_from_dict(record, model, model_id=w.loaded.model_id))
        st.success(f"Loaded {upload.name}: {int(ui.keep().sum())} heads kept.")
        st.rerun()
except Exception as exc:
    ui.error(f"{upload.name} was not applied", exc)

_report.report_section(keep, f"{name}-{kept}heads")

# ------------------------------------------------------------------------------------------ pruned model folder
st.subheader("2 · Pruned model folder")
st.caption("Heads are physically removed (smaller weights, faster); the folder reloads with "
           "`headprune.load_pruned` (Llama-family models that keep as many heads in every layer also load with plain "
           "`from_pretrained`). It is checked by reloading it and comparing its outputs with the masked (or recovered) "
           "model. An existing folder is never replaced unless it is an earlier headprune export and you say so.")
base = name if ui.policy().served else str(Path.home() / "headprune-exports" / name)  # served: under the exports root
default = f"{base}-{kept}heads"
folder, replace, recovered = ui.output_fields("export", "Folder", default, path_key="export_folder", keep=keep,
                                             replace_label="Replace it if it is an earlier headprune export")
if st.button("Write the pruned model", type="primary"):
    try:
        target = ui.output_path(folder, "pruned-model", replace=replace)
        with st.spinner("pruning, saving, reloading and comparing outputs…"):
            meta = json.loads(text)["meta"]
            if recovered:
                meta = {**meta, "recovery": {**recovered.recovery.summary(), "calibrated_on": recovered.calibrated_on}}
            ss["exported"] = (code, bench.export(keep, target, meta=meta, overwrite=replace,
                                                 recovery=recovered.recovery if recovered else None))
    except Exception as exc:
        ui.error("Could not write the pruned model", exc)
done = ss.get("exported")
if done and done[0] == code:
    result = done[1]
    (st.success if result.matches else st.error)(
        f"Wrote {result.path} in {format_seconds(result.seconds)}: reloaded outputs "
        f"{'match' if result.matches else 'DIFFER from'} the {'recovered' if result.recovered else 'masked'} "
        f"model (max |Δlogit| = {result.max_abs_diff:.2e}); "
        f"parameters {result.params_before / 1e6:.2f} M → {result.params_after / 1e6:.2f} M.")

# ------------------------------------------------------------------------------------------ recovery fine-tune
st.subheader("3 · Recovery fine-tune (optional)")
st.caption("Fine-tunes the physically pruned model with distillation from the dense one, in the background: "
           "keep using the other pages meanwhile. It trains on training examples apart from the live set and reports "
           "the live set before and after.")
c1, c2 = st.columns(2)
examples = c1.number_input("training examples", 64, TRAIN_EXAMPLES_MAX, 2000, step=64, key="ft_examples")
steps = c2.number_input("at most steps", 1, 100000, 100, key="ft_steps")
job = ui.job("finetune")
running = job.snapshot()["status"] == "running"
if st.button("Start recovery fine-tune", disabled=running):
    mask_now = keep.clone()

    def run(progress, should_stop, mask_now=mask_now, examples=int(examples), max_steps=int(steps)):
        progress(0.0, "loading training examples")
        train, described = bench.other_examples("train", examples, purpose="training")
        tuned, report = bench.finetune(mask_now, train, max_steps=max_steps, should_stop=should_stop,
                                       progress=progress, val_batches=w.batches)
        return {"mask": encode_mask(mask_now), "model": tuned, "report": report, "trained_on": described}

    ui.start_job("finetune", run)
    st.rerun()
snap = ui.job_panel("finetune", label="Recovery fine-tune")
if snap["status"] == "done" and snap["result"]:
    report = snap["result"]["report"]
    if report.stopped:
        st.warning(f"Stopped after {report.steps} steps.")
    else:
        before, after_ft = report.before["val"], report.after["val"]
        k, label = ui.quality_key(before)
        c1, c2, c3 = st.columns(3)
        c1.metric(f"{label} before", f"{before[k]:.1%}" if k != "loss" else f"{before[k]:.3f}", border=True)
        c2.metric(f"{label} after", f"{after_ft[k]:.1%}" if k != "loss" else f"{after_ft[k]:.3f}",
                  delta=ui.delta(100 * (after_ft[k] - before[k]), " pts"), border=True)
        c3.metric("steps", report.steps, border=True)
        st.caption(f"Trained on {snap['result']['trained_on']}; measured on the live set."
                   + (" (Fine-tuned for an earlier mask.)" if snap["result"]["mask"] != code else ""))
        target_text = st.text_input("Save the fine-tuned model to", value=default + "-recovered", key="ft_folder")
        replace_ft = st.checkbox("Replace it if it is an earlier headprune export", key="ft_replace")
        if st.button("Save fine-tuned model"):
            try:
                target = ui.output_path(target_text, "pruned-model", replace=replace_ft)
                path = save_pruned(snap["result"]["model"], target, w.loaded.tokenizer, overwrite=replace_ft,
                                   meta={"recovery": {k: report[k] for k in ("steps", "mean_loss", "final_loss", "settings")}})
                st.success(f"Saved {path}")
            except Exception as exc:
                ui.error("Could not save the fine-tuned model", exc)

# ------------------------------------------------------------------------------------------ ONNX
st.subheader("4 · ONNX file for ONNX Runtime")
deploy.onnx_section(keep, default_path=default + ".onnx")

# ------------------------------------------------------------------------------------------ compress to a target
_compress.section(base)
