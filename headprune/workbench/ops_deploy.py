"""Deploying a mask: measured latency (PyTorch, ONNX Runtime), where its pruned model loads, the nearest
runtime-safe mask, the ONNX export.

A part of `Workbench` (headprune/workbench/bench.py): it uses the state set up there (`workload`, `model`,
`shape`, the live evaluator and memo, `recovered`, `compressed`).
"""
from __future__ import annotations

from ..core.errors import UserError
from ..core.progress import Progress, parts
from ..core.types import (
    LATENCY_RUNTIMES,
    LatencyRuntime,
)
from ..deploy import (
    LatencySettings,
    LoadsIn,
    OnnxExport,
    export_onnx,
    loads_in,
    measure_onnx,
    round_to_uniform,
)
from ..deploy.latency import RUNTIMES
from ..evaluation.latency import measure
from ..recovery.lsq import Recovery
from .deploy import RuntimeSafeMask, parity_batches, runtime_safe_blocker
from .records import mask_key


class WorkbenchDeploy:
    """Deploying a mask (a part of `Workbench`)."""

    def measure(self, keep, *, batch_size: int = 8, seq_len: int = 128, repeats: int = 10, threads: int | None = None,
                runtime: LatencyRuntime = "torch", progress: Progress | None = None) -> dict:
        """Measured latency, dense vs physically pruned, B = batch_size x T = seq_len tokens per pass, same threads.

        runtime "torch": `headprune.measure`'s dict; "onnxruntime": the same layout for ONNX Runtime (both models
        exported first; no KV cache; `RuntimeLatency.flat`); "both": {"torch": ..., "onnxruntime": ...}.
        """
        if runtime == "both":
            return {name: self.measure(keep, batch_size=batch_size, seq_len=seq_len, repeats=repeats, threads=threads,
                                       runtime=name, progress=part)
                    for name, part in zip(RUNTIMES, parts(progress, len(RUNTIMES)))}
        if runtime == "onnxruntime":
            settings = LatencySettings(batch_size, seq_len, repeats, threads=threads)
            return measure_onnx(self.model, keep, settings, progress=progress).flat()
        if runtime != "torch":
            raise UserError(f"unknown runtime {runtime!r}; choose one of {', '.join(LATENCY_RUNTIMES)}", option="runtime")
        result = measure(self.model, keep, batch_size=batch_size, seq_len=seq_len, repeats=repeats, threads=threads,
                         progress=progress)
        self._measured[mask_key(keep)] = result  # remembered as the mask's latest (`measured_for`, `summary`)
        return result

    def measured_for(self, keep) -> dict | None:
        """The latest `measure` of this mask in this session, or None."""
        return self._measured.get(mask_key(keep))

    def loads_in(self, keep) -> LoadsIn:
        """Where the model pruned by `keep` loads, one verdict per runtime with its reason (`loads_in`)."""
        return loads_in(self.model, keep)

    def runtime_safe_blocker(self, keep) -> str | None:
        """Why no mask near `keep` loads in every runtime; None when `runtime_safe` makes one."""
        return runtime_safe_blocker(self.model, keep)

    def runtime_safe(self, keep, *, metric: str = "gradient", progress: Progress | None = None) -> RuntimeSafeMask:
        """The nearest mask to `keep` that loads in every runtime (`round_to_uniform` by this workload's `metric`
        scores), with the exact metrics of both masks (`exact`): the accuracy cost. `UserError` when there is none."""
        blocker = self.runtime_safe_blocker(keep)
        if blocker is not None:
            raise UserError(f"no mask near this one loads in every runtime: {blocker}")
        uniform = round_to_uniform(keep, self.score(metric, progress=progress).scores, self.model)
        return RuntimeSafeMask(uniform, metric, self.exact(keep), self.exact(uniform.keep))

    def export_onnx(self, keep, path, *, recovery: Recovery | None = None, overwrite: bool = False,
                    latency: LatencySettings | None = None, progress: Progress | None = None) -> OnnxExport:
        """The model pruned by `keep` (with `recovery` baked in) as an ONNX file at `path` (the caller checks it
        first), its ONNX Runtime parity checked on the workload's first examples; `latency`: also time ONNX
        Runtime dense vs pruned (`headprune.deploy.export_onnx`)."""
        batches, described = parity_batches(self.workload)
        return export_onnx(self.model, path, keep, recovery=recovery, batches=batches,
                           model_id=self.workload.loaded.model_id, latency=latency, overwrite=overwrite,
                           meta={"parity_examples": described}, progress=progress)
