"""What a session takes away: least-squares recovery, the reproducibility record, the HTML report, the
pruned model saved and checked, the fine-tuned model.

A part of `Workbench` (headprune/workbench/bench.py): it uses the state set up there (`workload`, `model`,
`shape`, the live evaluator and memo, `recovered`, `compressed`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..core.progress import Progress, sub
from ..core.types import (
    RecoveryMethod,
    RecoveryTarget,
)
from ..evaluation.loop import evaluate_examples
from ..model.surgery import prune
from ..recovery.finetune import FinetuneReport, FinetuneSettings
from ..recovery.finetune import recover as finetune_recover
from ..recovery.lsq import Recovery, check_feed_forward, lsq_recover
from .export import ExportReport, prune_and_save, reproducibility_record
from .records import RecoveredMask
from .report import build_report


class WorkbenchOutputs:
    """What a session takes away (a part of `Workbench`)."""

    def recover(self, keep, method: RecoveryMethod = "weights", *, target: RecoveryTarget = "auto",
                calib: tuple[list, str] | None = None, evaluate: bool = True, feed_forward: bool = False,
                progress: Progress | None = None) -> RecoveredMask:
        """Least-squares recovery of `keep` (calibrated on `calib` = (batches, description), default the
        training examples apart from the live set; `feed_forward`: the feed-forward outputs refitted too),
        evaluated on the workload's examples (unless not `evaluate`); kept as this session's recovered mask."""
        if feed_forward:
            check_feed_forward(self.model, target)
        batches, described = calib or self.other_examples("train", 512, purpose="calibration")
        recovery = lsq_recover(self.model, keep, batches, method=method, target=target, feed_forward=feed_forward,
                               progress=sub(progress, 0, 0.8 if evaluate else 1.0))
        result = examples = None
        if evaluate:
            with recovery.applied(self.model):
                result, examples = evaluate_examples(self.model, self.workload.batches, task=self.workload.loaded.task,
                                                     progress=sub(progress, 0.8, 1.0))
        self.recovered = RecoveredMask(recovery=recovery, result=result, calibrated_on=described, examples=examples)
        return self.recovered

    def adopt_recovery(self, recovery: Recovery, calibrated_on: str) -> RecoveredMask:
        """Make a recovery made elsewhere (a budget search) this session's, evaluated on its examples."""
        with recovery.applied(self.model):
            result, examples = evaluate_examples(self.model, self.workload.batches, task=self.workload.loaded.task)
        self.recovered = RecoveredMask(recovery=recovery, result=result, calibrated_on=calibrated_on, examples=examples)
        return self.recovered

    def recovered_for(self, keep) -> RecoveredMask | None:
        """This session's recovered mask when it belongs to `keep`."""
        rec = self.recovered
        return rec if rec is not None and torch.equal(rec.keep, torch.as_tensor(keep).bool()) else None

    def mask_record(self, keep, *, after: Mapping[str, Any], scores: Mapping[str, Any] | None = None,
                    latency: Mapping[str, Any] | None = None, versions: Mapping[str, str] | None = None) -> dict:
        """The reproducibility record of a mask (its file's `meta`)."""
        return reproducibility_record(self.workload, keep, after=after, scores=scores, latency=latency,
                                      versions=versions)

    def report(self, keep, *, mask_file: str = "mask.json", out: str = "report.html",
               versions: Mapping[str, str] | None = None) -> str:
        """A self-contained offline HTML report of `keep` (`headprune.workbench.report.build_report`)."""
        return build_report(self, keep, mask_file=mask_file, out=out, versions=dict(versions or {}))

    def export(self, keep, folder, *, recovery: Recovery | None = None, meta: Mapping[str, Any] | None = None,
               overwrite: bool = False) -> ExportReport:
        """Prune physically (with `recovery` baked in), save, reload and compare (`prune_and_save`)."""
        return prune_and_save(self.workload, keep, folder, meta=meta, recovery=recovery, overwrite=overwrite)

    def finetune(self, keep, train_batches: list, settings: FinetuneSettings | None = None, *,
                 val_batches=None, test_batches=None, **options) -> tuple[torch.nn.Module, FinetuneReport]:
        """Prune `keep` physically and recover by fine-tuning with distillation from the dense model
        (`options`: checkpoint_dir, checkpoint_every, resume, should_stop, progress, settings fields)."""
        return finetune_recover(prune(self.model, keep), train_batches, settings, teacher=self.model,
                                val_batches=val_batches, test_batches=test_batches, **options)
