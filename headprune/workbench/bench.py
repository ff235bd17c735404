"""The Workbench: every operation the CLI and the dashboard share, over one workload.

After explainerdashboard's "stateful explainer": the workload (model, data, results computed on it) may be shared
by many browser sessions; a `Workbench` is one session's view of it, holding what that session owns (its live
evaluator, its recovered mask). Each CLI command is an argument parser plus Workbench calls; each dashboard page
lays out widgets and figures and calls the Workbench. No pipeline is assembled anywhere else.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd
import torch

from ..core.errors import UserError
from ..core.progress import Progress, parts, sub, weighted
from ..core.records import Record
from ..core.types import (
    LATENCY_RUNTIMES,
    CurveMode,
    LatencyRuntime,
    RecoveryMethod,
    RecoveryTarget,
    UnitMode,
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
from ..evaluation.examples import ExampleChanges, ExampleOutputs, HeadEffect
from ..evaluation.latency import measure
from ..evaluation.live import LiveEvaluator
from ..evaluation.loop import evaluate, evaluate_examples
from ..evaluation.metrics import Evaluation
from ..evaluation.zeroshot import zero_shot_sentiment
from ..model.schema import ScoreRecord
from ..model.surgery import prune
from ..recovery.finetune import FinetuneReport, FinetuneSettings
from ..recovery.finetune import recover as finetune_recover
from ..recovery.lsq import Recovery, lsq_recover
from ..scoring.agreement import bootstrap_ranks, compare_metrics
from ..scoring.api import score_heads, score_many
from ..scoring.attention import attention_pattern
from ..scoring.registry import METRICS
from ..scoring.roles import head_roles
from ..search.budget import BudgetResult, budget_mask
from ..search.compress import CompressResult, compress
from ..search.compress_plan import CompressData, CompressSettings
from ..search.curves import curve_cost, prune_curve, random_baseline, ranking_cost
from ..search.iterative import iterative_scores
from ..search.masks import least_important, removable_heads
from ..sources.batches import make_batches
from ..sources.tokens import display_tokens
from .changes import (
    Continuation,
    MaskSummary,
    changes,
    continuations,
    heads_responsible,
    summary,
)
from .deploy import RuntimeSafeMask, parity_batches, runtime_safe_blocker
from .export import ExportReport, prune_and_save, reproducibility_record, save_checked
from .report import build_report
from .workload import Workload, split_batches

EXACT_MEMO = 256  # exact evaluations a session remembers, by mask
COMPRESS_REPORT = "compress_report.json"  # written into a compressed model's folder
TOGGLE_TARGET_S = 2.0  # the live set is sized so that a toggle answers in about this many seconds
TOGGLE_PASS = 0.5  # a toggle re-runs about half a dense pass (layers >= the toggled one; README whatif: 0.33-0.75)
GRADIENT_PASSES = 2.2  # a gradient-metric scoring pass in dense forward passes (bench/score_speed.py: 2.11)


@dataclass(frozen=True)
class RecoveredMask(Record):
    """A least-squares recovery of one mask and its metrics on the workload's examples."""

    recovery: Recovery
    result: Evaluation | None
    calibrated_on: str
    examples: ExampleOutputs | None = None

    @property
    def keep(self) -> torch.Tensor:
        return self.recovery.keep


def _mask_key(keep) -> tuple:
    return tuple(torch.as_tensor(keep).bool().flatten().tolist())


class Workbench:
    """One session's operations over a (possibly shared) `Workload`."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self._live: LiveEvaluator | None = None
        self._exact: collections.OrderedDict = collections.OrderedDict()  # mask key -> (Evaluation, ExampleOutputs)
        self._measured: dict[tuple, dict] = {}  # mask key -> the latest `measure` of it
        self._toggles: collections.deque = collections.deque(maxlen=20)  # seconds of recent live re-evaluations
        self._live_lock = threading.Lock()  # the live evaluator moves its reference mask: one caller at a time
        self.recovered: RecoveredMask | None = None
        self.compressed: CompressResult | None = None  # this session's last compress run

    # ------------------------------------------------------------------------------------------ basics
    @property
    def model(self):
        return self.workload.model

    @property
    def shape(self) -> tuple[int, int]:
        return self.workload.shape

    @property
    def dense(self) -> Evaluation:
        return self.workload.dense

    def split_batches(self, split: str | None, *, limit: int | None = None, batch_size: int | None = None):
        """(data frame, batches) of another split of the workload's data, batched like the workload."""
        w = self.workload
        return split_batches(w.loaded, w.data_spec, split, limit=limit, batch_size=batch_size or w.settings["batch_size"],
                             max_length=w.settings["max_length"], seed=w.settings["seed"], data_options=w.data_options())

    def other_examples(self, split: str | None, limit: int | None, *, purpose: str) -> tuple[list, str]:
        """(batches, description) of up to `limit` (None: all) examples of `split` that are not among the
        workload's own examples (so a search judged or calibrated on them does not see the live set). A source
        without such a split gives its remaining rows; with nothing left, the workload's own examples, said so."""
        w = self.workload
        key = (split, limit, purpose)
        found = w.store.get("other-examples", key)
        if found is not None:
            return found
        try:
            df, _ = self.split_batches(split)
        except UserError:
            df, split = self.split_batches(None)[0], None
        own = set(w.df["text"].astype(str))
        rest = df[~df["text"].astype(str).isin(own)]
        if len(rest) == 0:
            return w.store.put("other-examples", key, (w.batches, f"the live examples themselves (the data has no "
                                                                  f"others; optimistic {purpose})"))
        rest = rest.sample(n=min(limit or len(rest), len(rest)), random_state=w.settings["seed"]).reset_index(drop=True)
        batches = make_batches(w.loaded.tokenizer, rest, w.loaded.task, batch_size=w.settings["batch_size"],
                               max_length=w.settings["max_length"], seed=w.settings["seed"])
        where = f"{split} examples" if split else "other examples of the same file"
        return w.store.put("other-examples", key, (batches, f"{len(rest)} {where}, apart from the live set"))

    # ------------------------------------------------------------------------------------------ scores
    def score(self, metric: str, *, keep=None, normalise_layers: bool = False, global_minmax: bool = False,
              seed: int = 0, cache: bool = True, progress: Progress | None = None) -> ScoreRecord:
        """`metric`'s scores of every head on the workload's examples, with what they mean; shared by every
        session (the disk cache holds the raw statistic across runs)."""
        options = {"normalise_layers": normalise_layers, "global_minmax": global_minmax, "seed": seed}
        key = (metric, tuple(sorted(options.items())), None if keep is None else _mask_key(keep))
        found = self.workload.store.get("scores", key)
        if found is not None:
            return found
        scores = score_heads(self.model, self.workload.batches, metric, keep=keep, normalise_layers=normalise_layers,
                             global_minmax=global_minmax, seed=seed, cache=cache, progress=progress)
        return self.workload.store.put("scores", key, ScoreRecord(metric, scores, options, self.workload.loaded.model_id,
                                                                  self._data_record()))

    def score_seconds(self, metric: str) -> float | None:
        """Expected seconds to score `metric` on the workload's examples, from the measured dense pass: gradient
        metrics cost about 2.1 passes (forward + backward; bench/score_speed.py), others are not estimated (None)."""
        if METRICS[metric].needs != "gradient":
            return None
        return GRADIENT_PASSES * float(self.dense.seconds or 0.0)

    def stored_score(self, metric: str, **options) -> ScoreRecord | None:
        """The score record of `metric` if some session computed it already (no work)."""
        options = {"normalise_layers": False, "global_minmax": False, "seed": 0, **options}
        return self.workload.store.get("scores", (metric, tuple(sorted(options.items())), None))

    def adopt_scores(self, record: ScoreRecord) -> ScoreRecord:
        """Make a score record read from a file (`headprune score --out`) available like computed scores."""
        options = {"normalise_layers": False, "global_minmax": False, "seed": 0, **record.options}
        options = {k: options[k] for k in ("normalise_layers", "global_minmax", "seed")}
        return self.workload.store.put("scores", (record.metric, tuple(sorted(options.items())), None), record)

    def compare(self, metrics: list[str], *, only_stored: bool = False, progress: Progress | None = None) -> dict | None:
        """Score maps of `metrics` (and `attention_mean`, the teaching example) and their rank correlations
        (`only_stored`: None unless some session computed them)."""
        found = self.workload.store.get("compare", tuple(metrics))
        if found is not None or only_stored:
            return found
        wanted = list(dict.fromkeys([*metrics, "attention_mean"]))
        maps = score_many(self.model, self.workload.batches, wanted, progress=progress)
        return self.workload.store.put("compare", tuple(metrics),
                                       {"maps": maps, "corr": compare_metrics({m: maps[m] for m in metrics})})

    def bootstrap(self, metric: str, *, only_stored: bool = False, progress: Progress | None = None) -> dict | None:
        """Bootstrap rank intervals of `metric` (20 resamples of the examples; `only_stored` as in `compare`)."""
        found = self.workload.store.get("bootstrap", (metric,))
        if found is None and not only_stored:
            found = self.workload.store.put("bootstrap", (metric,),
                                            bootstrap_ranks(self.model, self.workload.batches, metric, progress=progress))
        return found

    def roles(self, *, max_examples: int = 64, only_stored: bool = False):
        """Role tags of every head (a DataFrame: layer, head, role, statistic, value; `only_stored` as in
        `compare`)."""
        found = self.workload.store.get("roles", (max_examples,))
        if found is None and not only_stored:
            found = self.workload.store.put("roles", (max_examples,),
                                            head_roles(self.model, self.workload.batches, max_examples=max_examples))
        return found

    def attention_pattern(self, example_index: int, layer: int, head: int) -> tuple[Any, list[str]]:
        """One head's attention map on one of the workload's examples: (weights (T, T), token texts)."""
        w = self.workload
        one = make_batches(w.loaded.tokenizer, w.df.iloc[[example_index]].reset_index(drop=True), w.loaded.task,
                           batch_size=1, max_length=int(w.settings.get("max_length", 128)))[0]
        weights, ids = attention_pattern(self.model, one, 0, layer, head)
        return weights, display_tokens(w.loaded.tokenizer, ids)

    # ------------------------------------------------------------------------------------------ masks
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
               progress: Progress | None = None) -> BudgetResult:
        """The most heads removable by `metric`'s order within `max_drop` (a fraction) of dense on `judge_batches`
        (default: the workload's own examples), each candidate recovered by least squares on `calib_batches`
        when `recover` names a method."""
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
                                recover_target=recover_target, min_heads_per_layer=min_heads_per_layer,
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

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, keep=None, *, batches: list | None = None, progress: Progress | None = None) -> Evaluation:
        """Metrics under `keep` on the workload's examples (or `batches`): one full pass."""
        return evaluate(self.model, batches if batches is not None else self.workload.batches, keep,
                        task=self.workload.loaded.task, progress=progress)

    def zero_shot_ready(self) -> list[str]:
        """The label names for zero-shot classification; `UserError` when the model or data cannot do it."""
        w = self.workload
        names = w.df.attrs.get("label_names")
        if w.loaded.task != "causal-lm":
            raise UserError("zero-shot classification needs a causal language model", option="zero_shot")
        if "label" not in w.df.columns or not names:
            raise UserError("zero-shot classification needs data with named labels (e.g. the built-in tweets)",
                            option="zero_shot")
        return list(names)

    def zero_shot(self, keep=None, *, progress: Progress | None = None) -> dict:
        """Zero-shot sentiment accuracy of a causal LM from label-word logits (needs named labels)."""
        names = self.zero_shot_ready()
        return zero_shot_sentiment(self.workload.loaded, self.workload.df, labels=names, keep=keep, progress=progress)

    @property
    def live(self) -> LiveEvaluator:
        """This session's live evaluator over the workload's examples (built on first use)."""
        if self._live is None:
            self._live = LiveEvaluator(self.model, self.workload.batches)
            self._exact[_mask_key(torch.ones(self.shape, dtype=torch.bool))] = (self._live.dense, self._live.examples)
        return self._live

    def exact(self, keep) -> Evaluation:
        """Exact metrics of a mask on the workload's examples, re-running only the changed layers (memoised)."""
        return self._exact_entry(keep)[0]

    def examples(self, keep=None) -> ExampleOutputs:
        """Per-example outputs of a mask (None: dense) on the workload's examples, in batch order: from the
        same exact evaluation as `exact` (no second pass)."""
        return self._exact_entry(torch.ones(self.shape, dtype=torch.bool) if keep is None else keep)[1]

    def _exact_entry(self, keep) -> tuple[Evaluation, ExampleOutputs]:
        key = _mask_key(keep)
        with self._live_lock:
            if key not in self._exact:
                result = self.live.evaluate(keep)
                self._exact[key] = (result, self.live.examples)
                if result.rerun_from_layer is not None:
                    self._toggles.append(result.seconds)
                while len(self._exact) > EXACT_MEMO:
                    self._exact.popitem(last=False)
            self._exact.move_to_end(key)
            return self._exact[key]

    def toggle_seconds(self) -> tuple[float, bool]:
        """(expected seconds of a toggle's exact evaluation, whether measured): the median of this session's
        recent toggles, else TOGGLE_PASS of the measured dense pass."""
        if self._toggles:
            return float(sorted(self._toggles)[len(self._toggles) // 2]), True
        return TOGGLE_PASS * float(self.dense.seconds or 0.0), False

    def live_size(self, target_s: float = TOGGLE_TARGET_S, *, minimum: int = 32) -> int:
        """The most live examples (at most the workload's) whose toggle is expected within `target_s` seconds,
        from the measured dense pass (a toggle re-runs about TOGGLE_PASS of it)."""
        n = len(self.workload.df)
        per_example = TOGGLE_PASS * float(self.dense.seconds or 0.0) / n
        return n if per_example <= 0 else max(min(minimum, n), min(n, int(target_s / per_example)))

    def estimate(self, keep) -> float:
        """Instant first-order loss estimate of a mask around the dense model."""
        with self._live_lock:
            return self.live.estimate(keep, around="dense")["loss"]

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
        self._measured[_mask_key(keep)] = result  # remembered as the mask's latest (`measured_for`, `summary`)
        return result

    # ------------------------------------------------------------------------------------------ deploy
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

    def measured_for(self, keep) -> dict | None:
        """The latest `measure` of this mask in this session, or None."""
        return self._measured.get(_mask_key(keep))

    def summary(self, keep=None) -> MaskSummary:
        """A mask's numbers in one row (None: dense): quality, loss, heads, FLOPs, parameters, KV cache and
        the measured latency when measured (dense: from the latest measurement of any mask)."""
        if keep is None:
            latest = next(reversed(self._measured.values()), None)
            latency = latest["dense"]["latency_ms_median"] if latest else None
            return summary(self.workload, None, self.dense, latency)
        measured = self.measured_for(keep)
        return summary(self.workload, keep, self.exact(keep),
                       measured["pruned"]["latency_ms_median"] if measured else None)

    # ------------------------------------------------------------------------------------------ examples
    def _outputs(self, side) -> ExampleOutputs:
        if isinstance(side, RecoveredMask):
            if side.examples is None:
                raise UserError("this recovery was not evaluated on the live examples; recover it again")
            return side.examples
        return self.examples(side)

    def what_changed(self, before, after, *, top: int = 10) -> ExampleChanges:
        """Which live examples flipped from `before` to `after` (each a mask, None for dense, or a
        `RecoveredMask`), whose loss moved most and (language models) which tokens moved most."""
        return changes(self.workload, self._outputs(before), self._outputs(after), top=top)

    def responsible(self, row: int, keep, *, top: int = 3) -> tuple[HeadEffect, ...]:
        """The removed heads of `keep` whose return alone helps live example `row` most (exact, one pass)."""
        return heads_responsible(self.workload, row, keep, top=top)

    def generate(self, prompt: str, masks: Mapping[str, Any], *, max_new_tokens: int = 20) -> tuple[Continuation, ...]:
        """Greedy continuations of `prompt` by each named mask (None: dense), side by side (causal LMs)."""
        return continuations(self.workload, prompt, masks, max_new_tokens=max_new_tokens)

    # ------------------------------------------------------------------------------------------ recovery, export
    def recover(self, keep, method: RecoveryMethod = "weights", *, target: RecoveryTarget = "auto",
                calib: tuple[list, str] | None = None, evaluate: bool = True,
                progress: Progress | None = None) -> RecoveredMask:
        """Least-squares recovery of `keep` (calibrated on `calib` = (batches, description), default the
        training examples apart from the live set), evaluated on the workload's examples (unless not
        `evaluate`); kept as this session's recovered mask."""
        batches, described = calib or self.other_examples("train", 512, purpose="calibration")
        recovery = lsq_recover(self.model, keep, batches, method=method, target=target,
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

    def compress(self, settings: CompressSettings, *, judge_examples: int | None = 2000, calib_examples: int = 512,
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

    def _data_record(self) -> dict:
        w = self.workload
        return {"data": w.data_spec, "split": w.split, "limit": w.settings.get("limit"), "n": len(w.df),
                "max_length": w.settings.get("max_length")}
