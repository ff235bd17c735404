"""Evaluating masks: full passes, this session's exact live evaluations (memoised, changed layers only),
instant estimates, expected toggle times, the examples a mask changed and zero-shot accuracy.

A part of `Workbench` (headprune/workbench/bench.py): it uses the state set up there (`workload`, `model`,
`shape`, the live evaluator and memo, `recovered`, `compressed`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..core.errors import UserError
from ..core.progress import Progress
from ..evaluation.examples import ExampleChanges, ExampleOutputs, HeadEffect
from ..evaluation.live import LiveEvaluator
from ..evaluation.loop import evaluate
from ..evaluation.metrics import Evaluation
from ..evaluation.zeroshot import zero_shot_sentiment
from .changes import (
    Continuation,
    MaskSummary,
    changes,
    continuations,
    heads_responsible,
    summary,
)
from .records import RecoveredMask, mask_key

EXACT_MEMO = 256  # exact evaluations a session remembers, by mask
TOGGLE_TARGET_S = 2.0  # the live set is sized so that a toggle answers in about this many seconds
TOGGLE_PASS = 0.5  # a toggle re-runs about half a dense pass (layers >= the toggled one; README whatif: 0.33-0.75)


class WorkbenchLive:
    """Evaluating masks (a part of `Workbench`)."""

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
            self._exact[mask_key(torch.ones(self.shape, dtype=torch.bool))] = (self._live.dense, self._live.examples)
        return self._live

    def exact(self, keep) -> Evaluation:
        """Exact metrics of a mask on the workload's examples, re-running only the changed layers (memoised)."""
        return self._exact_entry(keep)[0]

    def examples(self, keep=None) -> ExampleOutputs:
        """Per-example outputs of a mask (None: dense) on the workload's examples, in batch order: from the
        same exact evaluation as `exact` (no second pass)."""
        return self._exact_entry(torch.ones(self.shape, dtype=torch.bool) if keep is None else keep)[1]

    def _exact_entry(self, keep) -> tuple[Evaluation, ExampleOutputs]:
        key = mask_key(keep)
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
