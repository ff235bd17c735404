"""Streamlit glue shared by the pages: the session's Workbench and mask, errors, background jobs.

Only state and layout live here; every number comes from `headprune.workbench.Workbench` (the engine never
imports Streamlit). One `Workload` per (model, data, size) is shared by every browser session
(`st.cache_resource`); each session gets its own `Workbench` over it.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

from headprune.core.errors import UserError
from headprune.core.log import log_internal_error
from headprune.core.outputs import check_output
from headprune.core.paths import cache_dir
from headprune.core.roots import PathPolicy
from headprune.scoring.registry import METRICS
from headprune.workbench import RecoveredMask, Workbench, Workload, open_workload
from headprune.workbench.jobs import Job
from headprune.workbench.ui_state import MaskHistory, app_settings, encode_mask

KEEP = "keep"  # the session's mask (L, H) bool tensor; a plain key, so it survives page switches
KEEP_FOR = "keep_for"  # Workload.key the mask belongs to
HISTORY = "mask_history"
MASK_A = "mask_a"  # the pinned mask A (L, H) bool tensor, absent when nothing is pinned; B is the session's mask
LAST_ACTION = "last_action"  # the Prune page's caption of the last named change (reset, invert, automatic mask)
DEFAULT_METRIC = "gradient"
LIVE_BATCH_SIZE = {"classification": 64, "masked-lm": 32, "causal-lm": 8}
UPLOADS = cache_dir("uploads")  # uploaded data files, one folder per content hash (headprune.core.roots.safe_upload_name)
OPTION_HINTS = {  # where a UserError's engine option is set in the dashboard
    "label_column": "in the sidebar, under Model and data: pick the Label column, or upload a file that has one",
    "text_column": "in the sidebar, under Model and data: pick the Text column",
    "data": "in the sidebar, under Model and data: choose the data",
    "model": "in the sidebar, under Model and data: choose the model",
}


# ---------------------------------------------------------------------------------------------- errors
def readable(text: str) -> str:
    """A message on one line, uploaded files named as the user named them (no temp folders)."""
    return re.sub(re.escape(str(UPLOADS)) + r"/[0-9a-f]+/", "", " ".join(str(text).split()))


def error(what: str, exc: BaseException) -> None:
    """One `st.error`: the reason for bad input (with where to fix it in the dashboard); for anything else, that
    it is a bug and where the traceback is. The session's state is left as it was."""
    if isinstance(exc, UserError):
        hint = OPTION_HINTS.get(exc.option or "")
        st.error(f"{readable(what)}: {readable(exc)}" + (f" ({hint})" if hint else ""), icon="⚠️")
        return
    path = log_internal_error(exc, what)
    st.error(f"{readable(what)}: internal error (this is a bug): {type(exc).__name__}: {readable(exc)[:300]}. "
             f"The traceback is in {path}.", icon="🐞")


# ------------------------------------------------------------------------------------------ served mode
@st.cache_resource(show_spinner=False)
def policy() -> PathPolicy:
    """Where typed paths may point (`headprune.core.roots`): anywhere on localhost; in served mode (bound beyond
    localhost, `-- --served` or HEADPRUNE_SERVED=1) only under the configured data, models and exports roots
    (`-- --data-root DIR` ... or HEADPRUNE_DATA_ROOT ...)."""
    settings = app_settings(sys.argv[1:])
    return PathPolicy.from_env(address=st.get_option("server.address"), served=settings["served"],
                               **settings["roots"])


# --------------------------------------------------------------------------------------------- workload
@st.cache_resource(show_spinner=False, max_entries=3)
def cached_workload(model_spec: str, data_spec: str, live_examples: int, data_options: tuple,
                    auto: bool = False) -> Workload:
    """One workload per (model, data, size), shared by every browser session (the model is never mutated):
    a seeded sample of the validation split (or of a plain file) is the live set. `auto`: fewer examples when
    the measured dense pass says a toggle would take much longer than ~2 s (`Workbench.live_size`)."""
    workload = open_workload(model_spec, data_spec, split=None, default_split="validation", limit=live_examples,
                             batch_size=None, data_options=dict(data_options))
    batch = LIVE_BATCH_SIZE.get(workload.loaded.task, 32)
    if workload.settings["batch_size"] != batch:
        workload = open_workload(model_spec, data_spec, split=None, default_split="validation", limit=live_examples,
                                 batch_size=batch, data_options=dict(data_options))
    workload.dense  # computed once here, not on a click
    size = Workbench(workload).live_size() if auto else len(workload.df)
    if size < len(workload.df):
        workload = workload.with_limit(size)
        workload.dense
    return workload


def bench() -> Workbench:
    """This session's Workbench over the shared workload."""
    ss = st.session_state
    workload = ss["workload"]
    stored = ss.get("bench")
    if stored is None or stored.workload is not workload:
        stored = ss["bench"] = Workbench(workload)
    return stored


def workload() -> Workload:
    return st.session_state["workload"]


def keep() -> torch.Tensor:
    return st.session_state[KEEP]


def history() -> MaskHistory:
    return st.session_state.setdefault(HISTORY, MaskHistory())


def set_keep(new: torch.Tensor, *, remember: bool = True) -> None:
    """Make `new` the session's mask (the old one goes on the undo stack), mirror it in the URL, and drop the
    caption of the last named change (the caller names this one after, if it has a name)."""
    old = st.session_state.get(KEEP)
    new = torch.as_tensor(new).bool().clone()
    if remember and old is not None and not torch.equal(old, new):
        history().push(old)
    st.session_state[KEEP] = new
    st.session_state.pop(LAST_ACTION, None)  # a caption about an earlier change would be stale now
    sync_url()


def sync_url() -> None:
    """Put the session's mask (`?mask=`) and the pinned mask A (`?a=`, same codec) in the URL, every time: the
    browser may have sent an older URL than the one an interrupted run has just written (the browser ignores a
    URL it already shows)."""
    st.query_params["mask"] = encode_mask(st.session_state[KEEP])
    pinned_mask = st.session_state.get(MASK_A)
    if pinned_mask is not None:
        st.query_params["a"] = encode_mask(pinned_mask)
    elif "a" in st.query_params:
        del st.query_params["a"]


def pinned() -> torch.Tensor | None:
    """The pinned mask A, or None."""
    return st.session_state.get(MASK_A)


def pin(new: torch.Tensor | None) -> None:
    """Pin `new` as mask A (None: unpin), mirrored in the URL."""
    if new is None:
        st.session_state.pop(MASK_A, None)
    else:
        st.session_state[MASK_A] = torch.as_tensor(new).bool().clone()
    sync_url()


def write_mask(new: torch.Tensor, target: str) -> None:
    """Make `new` mask A (`target` "A") or the session's mask B (anything else, with undo)."""
    if target == "A":
        pin(new)
    else:
        set_keep(new)


def new_json_upload(upload, key: str):
    """The JSON object of a file just uploaded (None when there is none, or it was handled already: an
    uploader keeps reporting its file on every rerun); `UserError` when it is not JSON."""
    if upload is None or st.session_state.get(key) == upload.file_id:
        return None
    st.session_state[key] = upload.file_id
    try:
        return json.loads(upload.getvalue().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{upload.name} is not valid JSON ({exc})") from None


def output_path(text: str, kind: str, *, replace: bool) -> Path:
    """Where an export typed in a page may be written, checked before any work: confined to the exports root when
    the dashboard is served to a class (`policy`), then `headprune.core.outputs.check_output` (never the model
    or the data, never someone else's files, an earlier headprune output of this `kind` only with `replace`)."""
    w = workload()
    return check_output(policy().writable(text), kind, overwrite=replace, protect=[w.loaded.model_id, w.data_spec])


def output_fields(prefix: str, label: str, default: str, *, path_key: str, replace_label: str,
                  keep: torch.Tensor) -> tuple[str, bool, RecoveredMask | None]:
    """The fields of a page's export: its path (remembered across page switches), whether an earlier headprune
    output there may be replaced, and the session's least-squares recovery of `keep` if the user includes it.
    Widget keys: `path_key`, ``{prefix}_replace``, ``{prefix}_recovery``. Returns (path text, replace, recovered
    mask or None); check the path with `output_path` before any work."""
    ss = st.session_state
    path = st.text_input(label, value=ss.get(f"{path_key}_value", default), key=path_key)
    ss[f"{path_key}_value"] = path  # a widget's own key is dropped when its page is left
    replace = st.checkbox(replace_label, key=f"{prefix}_replace")
    recovered = bench().recovered_for(keep)
    included = recovered is not None and st.checkbox(
        f"Include the least-squares recovery ({recovered.recovery.method}, made on the Prune page)", value=True,
        key=f"{prefix}_recovery")
    return path, replace, recovered if included else None


def quality_key(result) -> tuple[str, str]:
    """(metric key, label) to show: accuracy for classifiers, next-token accuracy for language models."""
    for key, label in (("accuracy", "accuracy"), ("next_token_accuracy", "next-token accuracy")):
        if key in result:
            return key, label
    return "loss", "loss"


# ------------------------------------------------------------------------------------------------- scores
def metric_names(*, teaching: bool = False) -> list[str]:
    """Metrics of the registry (without the teaching-only ones unless asked)."""
    return [name for name, spec in METRICS.items() if teaching or not spec.teaching]


def metric_description(name: str) -> str:
    spec = METRICS.get(name)
    return "" if spec is None else f"{spec.description} ({spec.citation})"


def stored_scores(metric: str, **options) -> torch.Tensor | None:
    """Scores some session computed already (no work), or None."""
    record = bench().stored_score(metric, **options)
    return None if record is None else record.scores


def compute_scores(metric: str, *, progress=None, **options) -> torch.Tensor:
    """The metric's scores on the live set (blocking), shared by every page and session."""
    return bench().score(metric, progress=progress, **options).scores


def delta(value: float, unit: str = "", spec: str = "+.1f") -> str | None:
    """Delta text for st.metric, or None when nothing changed (no arrow for no change)."""
    return None if abs(value) < 1e-12 else f"{value:{spec}}{unit}"


def as_numpy(scores) -> np.ndarray:
    return scores.detach().cpu().float().numpy() if torch.is_tensor(scores) else np.asarray(scores, dtype=float)


# ------------------------------------------------------------------------------------------------- jobs
def job(name: str) -> Job:
    jobs = st.session_state.setdefault("jobs", {})
    if name not in jobs:
        jobs[name] = Job(name)
    return jobs[name]


def start_job(name: str, fn: Callable[..., Any], *, pass_should_stop: bool = True) -> None:
    try:
        job(name).start(fn, pass_should_stop=pass_should_stop)
    except UserError as exc:
        error("Could not start", exc)


def job_panel(name: str, *, label: str) -> dict:
    """Render a job's state; while it runs, a fragment polls it every second (the rest of the page stays usable)
    and redraws the whole page once it ends, so the result appears. Returns the snapshot taken now."""
    the_job = job(name)
    snap = the_job.snapshot()

    @st.fragment(run_every=1.0 if snap["status"] == "running" else None)
    def poll():
        now = the_job.snapshot()
        if now["status"] == "running":
            st.progress(now["fraction"], text=f"{label}: {now['message']}  {now['eta']}".strip())
            if st.button("Cancel", key=f"cancel_{name}", disabled=now["cancelling"]):
                the_job.cancel()
        elif snap["status"] == "running":  # finished since the page was drawn
            st.rerun()

    poll()
    if snap["status"] == "failed":
        st.error(f"{label} failed: {snap['error']}", icon="⚠️")
    elif snap["status"] == "cancelled":
        st.warning(f"{label} was cancelled after {snap['elapsed']:.0f} s.")
    return snap


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
