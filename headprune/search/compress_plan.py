"""The parts of a compress run (`headprune.search.compress`): its settings and data, the cost model its time
ledger runs on (measured by `Stopwatch`), the ladder of sizes it climbs, and its typed results."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..core.errors import UserError
from ..core.records import Record, jsonable
from ..core.types import (
    COMPRESS_UNITS,
    RECOVERY_METHODS,
    RECOVERY_TARGETS,
    CompressUnit,
    RecoveryMethod,
    RecoveryTarget,
)
from ..model.layout import head_grid, kv_group_size
from ..model.units import uniform_head_counts
from .masks import (
    check_min_heads,
    least_important,
    removable_heads,
    uniform_least_important,
)

# cheap enough to re-score after every step; "auto": `phase_metric`
RESCORE_METRICS = ("auto", "gradient", "fisher", "magnitude", "reconstruction")
# forward-pass equivalents (bench/score_speed.py; "reconstruction": one pass, `reconstruction_scores`)
SCORE_PASSES = {"gradient": 2.2, "fisher": 2.2, "magnitude": 0.0, "reconstruction": 1.0}
PATIENCE = 2  # a failing distillation candidate continues while one of its last this-many slices set a new best
LSQ_PASSES = 3.0  # least squares: up to three passes over the calibration examples (`lsq_recover`)
# ... and with the feed-forward refit, measured: 41.3 s vs 18.4 s attention only on `minilm-tweets`, 1,024
# calibration tweets, a forward pass 7 ms a tweet (two more replayed passes and the (d_ff + 1)² normal equations)
FFN_PASSES = 3.3  # (41.3 − 18.4) s / (1,024 × 7 ms) ≈ 3.2, rounded up


@dataclass(frozen=True)
class CompressSettings:
    """How to compress. max_drop: quality points (accuracy × 100) the model may lose on validation vs dense.
    time_budget: seconds for everything (setup, search, final test evaluations). target_heads: stop once this
    fraction of all heads is removed (None: as many as the budget allows). unit: "head", "kv-group" or "uniform".
    metric: re-scored after every accepted step (gradient, fisher, magnitude, or "reconstruction": the order
    least squares best makes up for, `reconstruction_scores`; "auto": `phase_metric`). step_fraction: a step goes this
    share of the way to the largest size not yet known to fail. distil_step_fraction: the same for the
    distillation phase until its first roll-back (1.0: straight to the top; afterwards `step_fraction`).
    distill: the distillation phase (False: least squares only). distill_steps / polish_steps: per slice / for
    the final polish (None: from the time budget). max_slices: a distillation candidate that misses the budget
    gets another slice while it improves fast enough (`worth_another_slice`), up to this many slices in all.
    retraining_free_share: the least-squares phase's share of the time at most (when distilling).
    lr, temperature, alpha: distillation (see `FinetuneSettings`). lsq_method / lsq_target: see `lsq_recover`.
    lsq_feed_forward: refit the feed-forward outputs too (`lsq_recover(feed_forward=True)`; None: where the model
    allows it, post-norm encoders)."""

    max_drop: float = 1.0
    time_budget: float = 600.0
    target_heads: float | None = None
    unit: CompressUnit = "head"
    min_heads_per_layer: int = 1
    metric: str = "auto"
    step_fraction: float = 0.5
    distil_step_fraction: float = 1.0
    distill: bool = True
    distill_steps: int | None = None
    max_slices: int = 8
    polish_steps: int | None = None
    retraining_free_share: float = 0.5
    lr: float = 1e-4
    temperature: float = 2.0
    alpha: float = 0.5
    lsq_method: RecoveryMethod = "weights"
    lsq_target: RecoveryTarget = "auto"
    lsq_feed_forward: bool | None = None
    seed: int = 0

    def check(self) -> None:
        """`UserError` naming the setting for anything out of range, before any work."""
        def number(value) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

        def count(value, low: int) -> bool:
            return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= low)

        rules = [
            (number(self.max_drop) and self.max_drop >= 0, "max_drop",
             f"the quality budget is the points you accept to lose, a finite number ≥ 0; got {self.max_drop!r}"),
            (number(self.time_budget) and self.time_budget > 0, "time_budget",
             f"the time budget must be a finite number of seconds > 0; got {self.time_budget!r}"),
            (self.target_heads is None or (number(self.target_heads) and 0 < self.target_heads <= 1), "target_heads",
             f"the target is the fraction of all heads to remove, in (0, 1]; got {self.target_heads!r}"),
            (self.unit in COMPRESS_UNITS, "unit",
             f"unit must be one of {', '.join(COMPRESS_UNITS)}; got {self.unit!r}"),
            (self.metric in RESCORE_METRICS, "metric", f"compress re-scores heads after every step: choose one of "
                                                       f"{', '.join(RESCORE_METRICS)}; got {self.metric!r}"),
            (number(self.step_fraction) and 0 < self.step_fraction <= 1, "step_fraction",
             f"step_fraction must lie in (0, 1]; got {self.step_fraction!r}"),
            (number(self.distil_step_fraction) and 0 < self.distil_step_fraction <= 1, "distil_step_fraction",
             f"distil_step_fraction must lie in (0, 1]; got {self.distil_step_fraction!r}"),
            (count(self.max_slices, 1) and self.max_slices is not None, "max_slices",
             f"max_slices must be a whole number ≥ 1; got {self.max_slices!r}"),
            (count(self.distill_steps, 1), "distill_steps", f"distill_steps must be ≥ 1; got {self.distill_steps!r}"),
            (count(self.polish_steps, 0), "polish_steps", f"polish_steps must be ≥ 0; got {self.polish_steps!r}"),
            (number(self.retraining_free_share) and 0 < self.retraining_free_share <= 1, "retraining_free_share",
             f"retraining_free_share must lie in (0, 1]; got {self.retraining_free_share!r}"),
            (number(self.lr) and self.lr > 0, "lr", f"the learning rate must be a positive number; got {self.lr!r}"),
            (number(self.temperature) and self.temperature > 0, "temperature",
             f"the distillation temperature must be > 0; got {self.temperature!r}"),
            (number(self.alpha) and 0 <= self.alpha <= 1, "alpha", f"alpha must lie in [0, 1]; got {self.alpha!r}"),
            (self.lsq_method in RECOVERY_METHODS, "lsq_method", f"lsq_method must be one of {RECOVERY_METHODS}"),
            (self.lsq_target in RECOVERY_TARGETS, "lsq_target", f"lsq_target must be one of {RECOVERY_TARGETS}"),
            (self.lsq_feed_forward in (None, True, False), "lsq_feed_forward",
             f"lsq_feed_forward must be true, false or None (where the model allows); got {self.lsq_feed_forward!r}"),
        ]
        for ok, option, message in rules:
            if not ok:
                raise UserError(message, option=option)


@dataclass(frozen=True)
class CompressData:
    """The examples, as batches: judge (validation: the budget), calib (training: least squares and scores),
    train (training: distillation), test (evaluated once, at the end)."""

    judge: list
    calib: list
    train: list
    test: list

    def check(self, distill: bool) -> None:
        for name, batches in (("judge", self.judge), ("calib", self.calib), ("test", self.test),
                              ("train", self.train if distill else [None])):
            if not batches:
                raise UserError(f"compress needs {name} examples; none were given", option=f"{name}_examples")

    def count(self, name: str) -> int:
        return sum(int(b["input_ids"].shape[0]) for b in getattr(self, name))


@dataclass(frozen=True)
class CostModel(Record):
    """Estimated seconds of the loop's operations: `forward_s` per example of a dense forward pass, `step_s`
    per distillation step at dense size, `copy_s` per copy of the dense model (every refit, pruning and
    fine-tune works on its own copy); a pruned model's forward work scales with its FLOP ratio. A step's time
    is linear in the FLOP ratio through two probes, (1, `step_s`) and (`small_ratio`, `small_step_s`) at the
    ladder's top: part of a step does not shrink with the heads (the dense teacher's pass, the optimizer over
    every parameter, embeddings included), so scaling a step by its FLOPs alone promises too much (on
    `minilm-tweets` at 6 of 72 heads: 0.65 s estimated, 0.74 s measured, and a polish planned on it overran the
    deadline). Without the second probe: (1 + 3·ratio) / 4 of `step_s` (the teacher's pass and the student's
    three)."""

    forward_s: float
    step_s: float
    copy_s: float = 0.0
    small_step_s: float | None = None
    small_ratio: float = 0.0

    def copies(self, count: int, ratio: float) -> float:
        return count * self.copy_s * ratio

    def evaluate(self, examples: int, ratio: float = 1.0) -> float:
        return examples * self.forward_s * ratio

    def score(self, examples: int, ratio: float, metric: str) -> float:
        return SCORE_PASSES[metric] * self.evaluate(examples, ratio)

    def refit(self, examples: int, ratio: float, feed_forward: bool = False) -> float:
        return (LSQ_PASSES + FFN_PASSES * feed_forward) * self.evaluate(examples, ratio)

    def distil(self, steps: int, ratio: float) -> float:
        if self.small_step_s is None or self.small_ratio >= 1:
            return steps * self.step_s * (1 + 3 * ratio) / 4
        small = min(self.small_step_s, self.step_s)  # probe noise never makes a smaller model dearer
        slope = (self.step_s - small) / (1 - self.small_ratio)
        return steps * max(0.0, small + slope * (ratio - self.small_ratio))


def phase_metric(metric: str, phase: str) -> str:
    """The metric a phase ranks heads by: `metric`, or for "auto" "reconstruction" in the least-squares phase
    (what least squares makes up for best) and "gradient" once distillation retrains (the loss's own
    sensitivity). On `minilm-tweets` (`bench/compress.py`, load 0.81 at the start): "reconstruction" throughout
    reached 50 of 72 heads retraining-free (test −0.84) where "gradient" had stopped at 35, but its top-of-ladder
    model recovered more slowly under distillation (66 removed: validation 0.7580 after 3 slices, "gradient"
    0.7655) and the run ended at test −0.86 without time for a polish."""
    if metric != "auto":
        return metric
    return "reconstruction" if phase == "least-squares" else "gradient"


def worth_another_slice(vals: list[float], threshold: float, slices_left: int) -> bool:
    """Whether a distillation candidate that missed `threshold` after `len(vals)` slices (`vals`: its validation
    quality after each) gets another: slices are left, it still improves (a new best within its last `PATIENCE`
    slices), and at its mean gain per slice so far its best would reach the threshold within the slices left.
    The straight line is optimistic (recovery slows down), so only a clearly hopeless candidate stops early."""
    if slices_left < 1:
        return False
    if len(vals) < 2:
        return True
    improving = len(vals) <= PATIENCE or max(vals[-PATIENCE:]) > max(vals[:-PATIENCE])
    rate = (vals[-1] - vals[0]) / (len(vals) - 1)
    return improving and max(vals) + rate * slices_left >= threshold


def typical_batches(batches: list, n: int = 3) -> list:
    """The `n` batches whose padded size (examples × tokens) is nearest the mean over `batches`, in their order:
    a probe of per-step time on them stands for a whole epoch (batches come sorted longest first, so the
    first ones would time the longest examples: 3-4× the mean step on tweets)."""
    sizes = [int(b["input_ids"].numel()) for b in batches]
    if len(sizes) <= n:
        return list(batches)
    mean = sum(sizes) / len(sizes)
    nearest = sorted(range(len(sizes)), key=lambda i: (abs(sizes[i] - mean), i))[:n]
    return [batches[i] for i in sorted(nearest)]


class Stopwatch:
    """A progress callback that notes when each unit of work (a batch, a training step) ends, so that per-unit
    time can be measured without the first unit's warm-up."""

    def __init__(self):
        self.ends: list[float] = []
        self.began = time.perf_counter()

    def __call__(self, fraction: float, message: str = "") -> None:
        self.ends.append(time.perf_counter())

    def per_item(self, units: list) -> float:
        """Seconds per item after the first unit (items: a batch's examples; a unit without a batch: 1)."""
        sizes = [int(u["input_ids"].shape[0]) if isinstance(u, dict) else 1 for u in units]
        if len(self.ends) < 2 or len(self.ends) != len(sizes):
            return (self.ends[-1] - self.began) / max(1, sum(sizes)) if self.ends else 0.0
        return (self.ends[-1] - self.ends[0]) / max(1, sum(sizes[1:]))


@dataclass(frozen=True)
class CompressStep(Record):
    """One candidate of the trajectory: phase, heads removed / kept, `val` on the validation examples (after
    its last slice; `slice_vals`: after each distillation slice), accepted or rolled back, its distillation
    steps, wall seconds (its own, and since the start) and, for the final and the retraining-free model,
    `test` (measured once, at the end)."""

    step: int
    phase: str
    heads_removed: int
    heads_kept: int
    val: float
    accepted: bool
    distill_steps: int
    seconds: float
    elapsed: float
    test: float | None = None
    slice_vals: tuple[float, ...] = ()


@dataclass(frozen=True)
class CompressResult(Record):
    """The compressed model's mask and quality (`metric_key` on validation `val` and test `test`, beside the
    dense model's), the retraining-free result (least squares only: keep, heads_removed, heads_removed_frac,
    val, test, stopped_by), the trajectory, why it stopped ("target", "budget", "time", "cancelled"), wall
    seconds in all, the plan (costs, slice length, budget), the examples used, and where it was saved."""

    keep: torch.Tensor
    heads_total: int
    heads_removed: int
    heads_removed_frac: float
    metric_key: str
    max_drop: float
    dense_val: float
    val: float
    threshold: float
    dense_test: float | None
    test: float | None
    retraining_free: dict
    trajectory: list
    stopped_by: str
    seconds: float
    distill_steps: int
    plan: dict
    examples: dict
    resumed: bool = False
    saved: str | None = None

    def report(self) -> dict:
        """The flat JSON report (`headprune compress --json`, `compress_report.json`, bench/compress.py)."""
        out = {k: v for k, v in self.to_dict().items() if k not in ("keep", "retraining_free", "test", "dense_test",
                                                                      "val", "dense_val")}
        rf = self.retraining_free
        out.update(heads_kept=self.heads_total - self.heads_removed, dense_val_acc=self.dense_val,
                   compressed_val_acc=self.val, dense_test_acc=self.dense_test, compressed_test_acc=self.test,
                   retraining_free_heads_removed=rf["heads_removed"],
                   retraining_free_heads_removed_frac=rf["heads_removed_frac"], retraining_free_val_acc=rf["val"],
                   retraining_free_test_acc=rf["test"], retraining_free_stopped_by=rf["stopped_by"],
                   kept_heads=[row.nonzero().flatten().tolist() for row in self.keep],
                   retraining_free_kept_heads=[row.nonzero().flatten().tolist() for row in rf["keep"]])
        return jsonable(out)  # a NaN metric (a language model's) becomes null, never invalid JSON


class Ladder:
    """The sizes the loop may try, as heads removed per level (level 0: none), and the mask of each level."""

    def __init__(self, model, settings: CompressSettings):
        self.model, self.settings = model, settings
        layers, heads = head_grid(model)
        self.total = layers * heads
        check_min_heads(settings.min_heads_per_layer, heads)
        if settings.unit == "uniform":
            counts = [c for c in sorted(uniform_head_counts(model), reverse=True)
                      if max(1, settings.min_heads_per_layer) <= c < heads]
            self.per_layer = [heads, *counts]
            removed = [layers * (heads - c) for c in self.per_layer]
        else:
            size = kv_group_size(model) if settings.unit == "kv-group" else 1
            most = removable_heads((layers, heads), -(-settings.min_heads_per_layer // size) * size)
            removed = list(range(0, most + 1, size))
        if settings.target_heads is not None:
            goal = math.ceil(settings.target_heads * self.total - 1e-9)
            removed = removed[: next((i for i, n in enumerate(removed) if n >= goal), len(removed) - 1) + 1]
        self.removed = removed

    def level(self, keep: torch.Tensor) -> int:
        gone = self.total - int(keep.sum())
        return max(i for i, n in enumerate(self.removed) if n <= gone)

    def mask(self, level: int, scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The mask of `level`: on top of `keep`, the least important heads (by `scores`) go."""
        if self.settings.unit == "uniform":
            return uniform_least_important(scores, self.per_layer[level], model=self.model, keep=keep)
        return least_important(scores, self.removed[level] - (self.total - int(keep.sum())), model=self.model,
                               min_heads_per_layer=self.settings.min_heads_per_layer, keep=keep,
                               unit_mode="kv-group" if self.settings.unit == "kv-group" else "head")
