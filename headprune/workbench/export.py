"""Exports of a workload's mask: the reproducibility record (the mask file's `meta`) and the physically pruned
(optionally least-squares recovered) model folder, checked by reloading it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..core.errors import UserError
from ..core.records import Record
from ..core.versions import library_versions
from ..model.forward import forward_logits, model_device, to_device
from ..model.intervene import masked
from ..model.layout import parameter_count
from ..model.storage import save_pruned
from ..model.surgery import prune
from ..presets import load_model
from ..recovery.lsq import Recovery
from ..scoring.cache import model_fingerprint
from .workload import Workload

METRIC_KEYS = ("accuracy", "macro_f1", "next_token_accuracy", "perplexity", "loss", "n")


@dataclass(frozen=True)
class ExportReport(Record):
    """A written pruned model: where, whether its reloaded outputs match the masked (or recovered) model on
    the first batch (max |Δ logit|), parameters before and after, wall seconds."""

    path: str
    max_abs_diff: float
    matches: bool
    recovered: bool
    params_before: int
    params_after: int
    seconds: float


def reproducibility_record(workload: Workload, keep, *, after: Mapping[str, Any], scores: Mapping[str, Any] | None = None,
                           latency: Mapping[str, Any] | None = None, versions: Mapping[str, str] | None = None) -> dict:
    """Everything needed to reproduce a mask's numbers, for the mask JSON's `meta`.

    after: metrics of the masked model on the workload's examples. scores: how the mask was scored (metric,
    options), if it was. latency: a `measure` result for this mask, if measured.
    """
    dense = workload.dense
    keys = [k for k in METRIC_KEYS if k in dense]
    record = {
        "model": {"id": workload.loaded.model_id, "fingerprint": model_fingerprint(workload.model),
                  "family": workload.loaded.meta.get("family"), "task": workload.loaded.task,
                  "grid": list(workload.shape)},
        "data": {"spec": workload.data_spec, "fingerprint": workload.data_fingerprint, "examples": len(workload.df),
                 **{k: v for k, v in workload.settings.items() if k not in ("data_fingerprint", "limit")}},
        "seeds": {"data_sample": workload.settings.get("seed", 0), "torch": torch.initial_seed()},
        "scores": dict(scores or {}),
        "before": {k: dense[k] for k in keys},
        "after": {k: after[k] for k in keys if k in after},
        "heads_kept": int(torch.as_tensor(keep).sum()),
        "versions": library_versions(versions),
    }
    if latency:
        record["latency"] = {side: {k: latency[side][k] for k in ("latency_ms_median", "latency_ms_p10", "latency_ms_p90")}
                             for side in ("dense", "pruned")}
        record["latency"].update({k: latency.get(k) for k in ("speedup", "batch_size", "seq_len", "repeats", "threads")})
    return record


def prune_and_save(workload: Workload, keep, folder, *, meta: Mapping[str, Any] | None = None,
                   recovery: Recovery | None = None, overwrite: bool = False) -> ExportReport:
    """Physically prune (after writing in `recovery`, a `Recovery` of this mask, if given), save to `folder`
    (`save_pruned`), reload it and compare its logits with the masked (or recovered) shared model on the first
    batch. The caller checks `folder` first (`headprune.core.outputs.check_output`)."""
    start = time.perf_counter()
    keep = torch.as_tensor(keep).bool()
    model = workload.model
    if recovery is not None and not torch.equal(recovery.keep, keep):
        raise UserError("the recovery was made for another mask: recover this mask again, or export without it")
    pruned = prune(model if recovery is None else recovery.bake(model), keep)
    with torch.inference_mode(), masked(model, keep) if recovery is None else recovery.applied(model):
        expected = forward_logits(model, workload.batches[0])
    return save_checked(workload, pruned, folder, meta=meta, overwrite=overwrite, expected=expected,
                        recovered=recovery is not None, start=start)


def save_checked(workload: Workload, model, folder, *, meta: Mapping[str, Any] | None = None,
                 extra_files: Mapping[str, str] | None = None, overwrite: bool = False,
                 expected: torch.Tensor | None = None, recovered: bool = False,
                 start: float | None = None) -> ExportReport:
    """Save a (pruned) `model` with the workload's tokenizer to `folder` (`save_pruned`, atomic), reload it and
    compare its logits on the workload's first batch with `expected` (default: `model`'s own). The caller
    checks `folder` first."""
    start = time.perf_counter() if start is None else start
    batch = workload.batches[0]
    if expected is None:
        with torch.inference_mode():
            expected = forward_logits(model, to_device(batch, model_device(model)))
    path = save_pruned(model, Path(folder).expanduser(), workload.loaded.tokenizer, meta=dict(meta or {}),
                       overwrite=overwrite, extra_files=extra_files)
    reloaded = load_model(str(path)).model
    with torch.inference_mode():
        got = forward_logits(reloaded, to_device(batch, model_device(reloaded)))
    diff = float((expected.cpu() - got.cpu()).abs().max())
    return ExportReport(path=str(path), max_abs_diff=diff, matches=diff < 1e-3, recovered=recovered,
                        params_before=parameter_count(workload.model), params_after=parameter_count(reloaded),
                        seconds=time.perf_counter() - start)
