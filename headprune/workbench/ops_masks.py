"""Choosing a mask: N least important, a removal ranking, the budget search, pruning curves, compress to a
target (and saving its model).

A part of `Workbench` (headprune/workbench/bench.py): it uses the state set up there (`workload`, `model`,
`shape`, the live evaluator and memo, `recovered`, `compressed`).
"""
from __future__ import annotations

import json
import time

import pandas as pd
import torch

from ..core.errors import UserError
from ..core.progress import Progress, weighted
from ..core.types import (
    CurveMode,
    RecoveryMethod,
    RecoveryTarget,
    UnitMode,
)
from ..evaluation.live import LiveEvaluator
from ..search.budget import BudgetResult, budget_mask
from ..search.compress import CompressResult, compress
from ..search.compress_plan import CompressData, CompressSettings
from ..search.curves import curve_cost, prune_curve, random_baseline, ranking_cost
from ..search.iterative import iterative_scores
from ..search.masks import least_important, removable_heads
from .export import ExportReport, save_checked

COMPRESS_REPORT = "compress_report.json"  # written into a compressed model's folder


class WorkbenchMasks:
    """Choosing a mask (a part of `Workbench`)."""

    def least_important(self, metric: str, n: int, *, min_heads_per_layer: int = 1, unit_mode: UnitMode = "head",
                        iterative: float | None = None, seed: int = 0, progress: Progress | None = None) -> torch.Tensor:
        """The mask without the `n` least important heads by `metric` (one-shot, or iterative with step)."""
        limit = removable_heads(self.shape, min_heads_per_layer)
        if n > limit:
            raise UserError(f"cannot remove {n} heads while keeping {min_heads_per_layer} in each of "
                            f"{self.shape[0]} layers: at most {limit} can go", option="heads")
        scores = self.ranking(metric, iterative=iterative, until=n / (self.shape[0] * self.shape[1]),
                              min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode, seed=seed, progress=progress)
        return least_important(scores, n, model=self.model, min_heads_per_layer=min_heads_per_layer,
                               unit_mode=unit_mode)

    def ranking(self, metric: str, *, iterative: float | None = None, until: float = 1.0, min_heads_per_layer: int = 1,
                unit_mode: UnitMode = "head", seed: int = 0, progress: Progress | None = None) -> torch.Tensor:
        """Scores that order heads for removal: `metric` once, or the iterative removal order (step `iterative`)."""
        if iterative is None:
            return self.score(metric, seed=seed, progress=progress).scores
        return iterative_scores(self.model, self.workload.batches, metric, step=iterative, until=until,
                                min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode, progress=progress)

    def budget(self, metric: str, max_drop: float, *, judge_batches: list | None = None, recover: RecoveryMethod | None = None,
               recover_target: RecoveryTarget = "auto", calib_batches: list | None = None, iterative: float | None = None,
               until: float = 1.0, greedy: bool = False, min_heads_per_layer: int = 1, unit_mode: UnitMode = "head",
               recover_feed_forward: bool = False, progress: Progress | None = None) -> BudgetResult:
        """The most heads removable by `metric`'s order within `max_drop` (a fraction) of dense on `judge_batches`
        (default: the workload's own examples), each candidate recovered by least squares on `calib_batches`
        when `recover` names a method (`recover_feed_forward`: the feed-forward outputs refitted too)."""
        heads = self.shape[0] * self.shape[1]
        ranking = 0.0 if iterative is None and self.stored_score(metric) is not None else \
            ranking_cost(metric, heads, mode="iterative" if iterative else "one-shot", step=iterative or 1.0, until=until)
        rank, search = weighted(progress, [ranking, (heads.bit_length() + 1) * (3.0 if recover else 1.0)])
        scores = self.ranking(metric, iterative=iterative, until=until, min_heads_per_layer=min_heads_per_layer,
                              unit_mode=unit_mode, progress=rank)
        judge = judge_batches if judge_batches is not None else self.workload.batches
        if recover is not None and calib_batches is None:
            raise UserError("recovery inside the budget search needs calibration data apart from the judging data",
                            option="calib_split")
        _, result = budget_mask(self.model, judge, scores, max_drop=max_drop, greedy=greedy,
                                recover_batches=calib_batches if recover else None, recover_method=recover or "weights",
                                recover_target=recover_target, recover_feed_forward=recover_feed_forward,
                                min_heads_per_layer=min_heads_per_layer,
                                unit_mode=unit_mode, progress=search)
        return result

    def curves(self, metrics: list[str], modes: list[CurveMode], fractions: list[float], *, step: float = 0.1,
               seeds: int = 5, stop_below: float | None = None, only_stored: bool = False,
               progress: Progress | None = None) -> dict | None:
        """Pruning curves of every (metric, mode) and the random-order baseline, sharing one live evaluator:
        {"curves": DataFrame, "baseline": DataFrame or None}. Shared by every session; `only_stored`: None
        unless some session computed them already."""
        key = (tuple(metrics), tuple(modes), tuple(fractions), step, seeds, stop_below)
        found = self.workload.store.get("curves", key)
        if found is not None or only_stored:
            return found
        evaluator = LiveEvaluator(self.model, self.workload.batches)
        jobs = [(m, mode) for m in metrics for mode in modes]
        heads = self.shape[0] * self.shape[1]
        pieces = weighted(progress, [curve_cost(m, heads, fractions, mode=mode, step=step) for m, mode in jobs]
                          + ([seeds * len(fractions)] if seeds else []))
        frames = [prune_curve(self.model, self.workload.batches, metric, fractions, mode=mode, step=step,
                              stop_below=stop_below, evaluator=evaluator, progress=piece)
                  for (metric, mode), piece in zip(jobs, pieces)]
        baseline = random_baseline(self.model, self.workload.batches, fractions, seeds=tuple(range(seeds)),
                                   evaluator=evaluator, progress=pieces[-1]) if seeds else None
        return self.workload.store.put("curves", key, {"curves": pd.concat(frames, ignore_index=True),
                                                       "baseline": baseline})

    def compress(self, settings: CompressSettings, *, judge_examples: int | None = 2000, calib_examples: int = 1024,
                 train_examples: int | None = None, test_batches: list | None = None, order=None, state_dir=None,
                 resume: bool = False, should_stop=None, progress: Progress | None = None,
                 started: float | None = None) -> tuple[torch.nn.Module, CompressResult]:
        """The smallest model within `settings.max_drop` points of dense, in `settings.time_budget` seconds
        (`headprune.search.compress`): judged on `judge_examples` (None: all) validation examples apart from the
        workload's own, refitted and scored on `calib_examples` training examples, distilled on the training
        split (up to `train_examples`), tested once on `test_batches` (default: the test split); `order`: a fixed
        ranking instead of re-scoring. Returns (model, result); the result is kept as this session's last
        compress run (`self.compressed`)."""
        started = time.perf_counter() if started is None else started
        settings.check()
        if self.workload.split is None:
            raise UserError("compress judges on validation, calibrates on train and tests on test examples: the "
                            "data needs those splits (give a file a 'split' column)", option="data")
        judge, _ = self.other_examples("validation", judge_examples, purpose="judging")
        calib, _ = self.other_examples("train", calib_examples, purpose="calibration")
        train = self.split_batches("train", limit=train_examples)[1] if settings.distill else []
        test = test_batches if test_batches is not None else self.split_batches("test")[1]
        data = CompressData(judge=judge, calib=calib, train=train, test=test)
        model, self.compressed = compress(self.model, data, settings, order=order, state_dir=state_dir, resume=resume,
                                          should_stop=should_stop, progress=progress, started=started)
        return model, self.compressed

    def save_compressed(self, model, result: CompressResult, folder, *,
                        overwrite: bool = False) -> tuple[CompressResult, ExportReport]:
        """Save a compressed model (physically pruned, atomic, reloaded and compared: `save_checked`) with
        `compress_report.json` (`result.report()`) in its folder; returns (result with `saved`, the check).
        The caller checks `folder` first."""
        result = result.replace(saved=str(folder))
        meta = {"source_model": self.workload.loaded.model_id, "compressed_by": "headprune compress",
                "report": COMPRESS_REPORT, "max_drop_points": result.max_drop, "val": result.val, "test": result.test,
                "dense_val": result.dense_val, "dense_test": result.dense_test}
        export = save_checked(self.workload, model, folder, meta=meta, overwrite=overwrite,
                              extra_files={COMPRESS_REPORT: json.dumps(result.report(), indent=2) + "\n"})
        if self.compressed is not None and torch.equal(self.compressed.keep, result.keep):
            self.compressed = result
        return result, export
