"""Streamlit glue shared by the pages: the loaded workload, the session's mask, engine look-ups, jobs.

Only state and layout live here; every number comes from `headprune` (the engine never imports Streamlit).
"""
from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st
import torch

from headprune.session import Job, MaskHistory, Workload, encode_mask, load_workload

KEEP = "keep"  # the session's mask (L, H) bool tensor; a plain key, so it survives page switches
KEEP_FOR = "keep_for"  # Workload.key the mask belongs to
HISTORY = "mask_history"


# ---------------------------------------------------------------------------------------------- engine
def engine(module: str):
    """`headprune.<module>`, or None when that part of the engine is not available (yet)."""
    try:
        return importlib.import_module(f"headprune.{module}")
    except ImportError:
        return None


def unavailable(what: str, module: str) -> None:
    st.info(f"{what} is not available yet: this installation has no `headprune.{module}`.", icon="🧩")


def error(what: str, exc: BaseException) -> None:
    """One `st.error` with the reason; the session's state is left as it was."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    st.error(f"{what}: {text}", icon="⚠️")


# --------------------------------------------------------------------------------------------- workload
@st.cache_resource(show_spinner=False, max_entries=3)
def cached_workload(model_spec: str, data_spec: str, live_examples: int, data_options: tuple) -> Workload:
    """One workload per (model, data, size), shared by every browser session (the model is never mutated)."""
    return load_workload(model_spec, data_spec, live_examples=live_examples, data_options=dict(data_options))


def workload() -> Workload:
    return st.session_state["workload"]


def keep() -> torch.Tensor:
    return st.session_state[KEEP]


def history() -> MaskHistory:
    return st.session_state.setdefault(HISTORY, MaskHistory())


def set_keep(new: torch.Tensor, *, remember: bool = True) -> None:
    """Make `new` the session's mask (the old one goes on the undo stack), and mirror it in the URL."""
    old = st.session_state.get(KEEP)
    new = torch.as_tensor(new).bool().clone()
    if remember and old is not None and not torch.equal(old, new):
        history().push(old)
    st.session_state[KEEP] = new
    sync_url()


def sync_url() -> None:
    """Put the session's mask in the URL, every time: the browser may have sent an older URL than the one an
    interrupted run has just written (the browser ignores a URL it already shows)."""
    st.query_params["mask"] = encode_mask(st.session_state[KEEP])


# ---------------------------------------------------------------------------------------- live numbers
def live_evaluator():
    """This session's `headprune.live.LiveEvaluator` over the shared model (None without the live engine)."""
    live = engine("live")
    if live is None:
        return None
    w = workload()
    stored = st.session_state.get("live_evaluator")
    if stored is None or stored[0] != w.key:
        evaluator = live.LiveEvaluator(w.model, w.batches)
        evaluator.gate_gradient(around="dense")  # one backward pass here rather than on a click
        stored = (w.key, evaluator)
        st.session_state["live_evaluator"] = stored
    return stored[1]


def estimate_loss(keep_mask: torch.Tensor) -> float | None:
    """Instant first-order loss estimate of a mask (None without the live engine)."""
    evaluator = live_evaluator()
    return None if evaluator is None else evaluator.estimate(keep_mask, around="dense")["loss"]


def mask_key(keep_mask: torch.Tensor) -> str:
    """A mask's identity within this session's workload (memo and record keys)."""
    return f"{workload().key}|{encode_mask(keep_mask)}"


def exact(keep_mask: torch.Tensor) -> dict:
    """Exact metrics of a mask on the live set (memoised per session by mask)."""
    w = workload()
    cache = st.session_state.setdefault("exact_cache", {})
    code = mask_key(keep_mask)
    if code not in cache:
        evaluator = live_evaluator()
        if evaluator is not None:
            result = evaluator.evaluate(keep_mask)
        else:
            from headprune.evaluate import evaluate

            result = evaluate(w.model, w.batches, keep_mask, task=w.loaded.task)
        if len(cache) > 256:
            cache.clear()
        cache[code] = result
    return cache[code]


RECOVERY_CALIB_EXAMPLES = 512  # training examples the least-squares recovery calibrates on (~25 s for MiniLM on 2 cores)
RECOVERY_METHODS = {"weights": "refit the kept heads' output projection", "scales": "rescale each kept head"}


def calibration_batches() -> tuple[list, str]:
    """(batches, description) for least-squares recovery: training examples of the loaded data (memoised per
    session), else the live set itself when the data has no training split."""
    w = workload()
    stored = st.session_state.get("calibration")
    if stored is None or stored[0] != w.key:
        from headprune.session import training_batches

        try:
            batches = training_batches(w, RECOVERY_CALIB_EXAMPLES)
            count = sum(len(b["input_ids"]) for b in batches)
            described = (f"{count} examples of the same file as the live set (a single file has no training split; "
                         "optimistic)" if Path(w.data_spec).expanduser().is_file() else f"{count} training examples")
        except (ValueError, OSError):
            batches, described = w.batches, "the live set itself (this data has no training split; optimistic)"
        stored = (w.key, batches, described)
        st.session_state["calibration"] = stored
    return stored[1], stored[2]


def recover_mask(keep_mask: torch.Tensor, method: str) -> dict:
    """Least-squares recovery of `keep_mask` on `calibration_batches`, remembered (`remember_recovery`)."""
    from headprune.recover import lsq_recover

    batches, described = calibration_batches()
    return remember_recovery(lsq_recover(workload().model, keep_mask, batches, method=method), described)


def remember_recovery(recovery, calibrated_on: str) -> dict:
    """Evaluate a `headprune.recover.Recovery` on the live set and keep it in the session (one at a time) so
    the Prune page shows it and the Export page can include it: {mask, method, recovery, result, calibrated_on}."""
    from headprune.evaluate import evaluate

    w = workload()
    with recovery.applied(w.model):
        result = evaluate(w.model, w.batches, task=w.loaded.task)
    record = {"mask": mask_key(recovery.keep), "method": recovery.method, "recovery": recovery,
              "result": result, "calibrated_on": calibrated_on}
    st.session_state["recovered"] = record
    return record


def recovered_for(keep_mask: torch.Tensor) -> dict | None:
    """The session's recovery record when it belongs to `keep_mask` on this workload, else None."""
    record = st.session_state.get("recovered")
    return record if record and record["mask"] == mask_key(keep_mask) else None


def quality_key(result: dict) -> tuple[str, str]:
    """(metric key, label) to show: accuracy for classifiers, next-token accuracy for language models."""
    for key, label in (("accuracy", "accuracy"), ("next_token_accuracy", "next-token accuracy")):
        if key in result:
            return key, label
    return "loss", "loss"


# ------------------------------------------------------------------------------------------------- scores
@st.cache_resource(show_spinner=False)
def _score_store() -> tuple[dict, threading.Lock]:
    """Scores computed in this server process, shared by all sessions: (workload key, metric, options) -> (L, H)."""
    return {}, threading.Lock()


SCORE_DEFAULTS = {"normalise_layers": False, "global_minmax": False}


def score_key(metric: str, **options) -> tuple:
    """Store key of a score map: workload, metric and every option (defaults filled in, so equal calls match)."""
    return (workload().key, metric, tuple(sorted({**SCORE_DEFAULTS, **options}.items())))


def stored_scores(metric: str, **options) -> torch.Tensor | None:
    store, lock = _score_store()
    with lock:
        return store.get(score_key(metric, **options))


def compute_scores(metric: str, *, progress=None, **options) -> torch.Tensor:
    """`headprune.score.score_heads` on the live set (blocking), stored for every page and session."""
    score = engine("score")
    if score is None:
        raise ValueError("head scoring is not available yet (no headprune.score)")
    w = workload()
    key = score_key(metric, **options)
    store, lock = _score_store()
    with lock:
        if key in store:
            return store[key]
    result = score.score_heads(w.model, w.batches, metric, progress=progress, **{**SCORE_DEFAULTS, **options})
    with lock:
        store[key] = result
    return result


def metric_names(*, teaching: bool = False) -> list[str]:
    """Metrics of `headprune.score.METRICS` (without the teaching-only ones unless asked)."""
    score = engine("score")
    if score is None:
        return []
    names = []
    for name, spec in score.METRICS.items():
        is_teaching = bool(getattr(spec, "teaching", False) if not isinstance(spec, dict) else spec.get("teaching"))
        if teaching or not is_teaching:
            names.append(name)
    return names


def metric_description(name: str) -> str:
    score = engine("score")
    spec = score.METRICS.get(name) if score is not None else None
    if spec is None:
        return ""
    get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
    text = get("description", "") or ""
    citation = get("citation", "") or ""
    return f"{text} ({citation})" if citation else text


def default_metric() -> str | None:
    names = metric_names()
    for preferred in ("taylor", "michel", "gradient", "fisher"):
        for name in names:
            if preferred in name:
                return name
    return names[0] if names else None


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
    except ValueError as exc:
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
