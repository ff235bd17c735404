"""Compress to a target: the smallest head set within a quality budget, found within a time budget.

Iterative pruning with recovery between the steps, after Michel et al. 2019 (prune iteratively, re-scoring under
the mask), Kwon et al. 2022 (least-squares refit of the kept heads, no retraining) and Sheared-LLaMA / Minitron
(prune towards a target, recover by distillation from the dense model): each step starts from a model that has
already recovered from the previous one.

The loop climbs a ladder of sizes (heads removed), one `unit` at a time: a head, a whole KV group, or
(`uniform`) one runtime-safe head count per layer after another (the same heads in every layer, whole groups).
Each candidate step:
1. removes the least important heads of the current model (scores by the phase's metric, `phase_metric`,
   re-computed on the accepted model after every step, or a fixed `order`, e.g. an iterative ablation order);
2. refits the kept heads' output projections (and, on post-norm encoders, the feed-forward outputs) by least
   squares on training examples (`lsq_recover`); in the distillation phase it then fine-tunes the physically
   pruned candidate for a slice of steps with distillation from the dense model (`recovery.finetune.recover`);
3. is judged on validation examples: within `max_drop` points of dense, it becomes the current model;
   otherwise a distillation candidate that still improves gets another slice (up to `max_slices`), and a
   candidate that does not is rolled back and a smaller step is tried (halving the gap to the smallest size
   that failed, as in a binary search); no smaller step left: the phase ends.
Phase "least-squares" refits the dense model only: its result is the retraining-free one, reported on its own.
Phase "distil" continues from there; its first step goes `distil_step_fraction` of the way to the top (default:
straight to it): on `minilm-tweets` one jump to 65 of 72 heads removed went from 2.65 points under dense to 0.25
over in 300 steps, where 40-step halvings stopped at 55. A last "polish" distils the best model with the time
left (at most 4 slices), kept if it still meets the budget. The test split is evaluated once, at the end.

Time: every decision is taken on a ledger of estimated seconds (`CostModel`, measured by `compress_setup` and
saved with the state), so a resumed run decides exactly as the uninterrupted one would. The ledger keeps the
final test evaluations' estimate (padded by 15%) in reserve; the wall clock is a hard stop at the time budget
less the unpadded estimate: a slice still running then is abandoned.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import torch

from ..core.errors import UserError
from ..core.progress import Progress, report, sub
from ..evaluation.cost import flops_per_token
from ..evaluation.loop import evaluate
from ..model.forward import model_device
from ..model.layout import head_grid, kept_mask
from ..model.surgery import prune
from ..recovery.finetune import FinetuneSettings, recover
from ..recovery.lsq import lsq_recover
from . import compress_setup as setup
from .compress_plan import (
    CompressData,
    CompressResult,
    CompressSettings,
    CompressStep,
    CostModel,
    Ladder,
    phase_metric,
    worth_another_slice,
)
from .compress_state import StateStore, as_list, as_tensor, run_record

POLISH_SLICES = 4  # the polish distils at most this many slices
POLISH_SLACK = 0.9  # the polish, the longest operation, plans on this share of the time left: the wall clock
# abandons a polish still running at the deadline, so an estimate 10% short must not cost it

__all__ = ["CompressData", "CompressResult", "CompressSettings", "CompressStep", "compress"]


class _Run:
    """One compress run: the dense model (never modified), the data, the ladder, the time ledger and the state
    (`st`, JSON-ready, written to the state folder after every step)."""

    def __init__(self, dense, data: CompressData, settings: CompressSettings, order, store: StateStore | None,
                 should_stop: Callable[[], bool] | None, progress: Progress | None, started: float):
        self.dense, self.data, self.s, self.order = dense, data, settings, order
        self.feed_forward = setup.feed_forward_refit(dense, settings)  # checked before any work
        self.store, self.should_stop, self.progress, self.started = store, should_stop, progress, started
        self.ladder = Ladder(dense, settings)
        self.dense_flops = flops_per_token(dense)
        self.counts = {name: data.count(name) for name in ("judge", "calib", "train", "test")}
        self.resumed = False
        self.model = dense  # the current model: the smallest that met the budget so far
        self.retraining_free_model = None
        self.costs: CostModel | None = None
        self.st: dict = {}

    # ------------------------------------------------------------------------------------ time and progress
    def wall(self) -> float:
        return time.perf_counter() - self.started

    def ratio(self, keep: torch.Tensor) -> float:
        """FLOPs per token of the model pruned to `keep`, relative to dense: what its passes cost."""
        return flops_per_token(self.dense, keep) / self.dense_flops

    def cancelled(self) -> bool:
        return self.should_stop is not None and bool(self.should_stop())

    def stopping(self) -> bool:
        """Asked between operations and before every training step: a stop request, or the wall-clock deadline."""
        return self.cancelled() or (bool(self.st) and self.wall() > self.st["plan"]["deadline_s"])

    def part(self, cost: float, what: str) -> Progress | None:
        """Progress of one operation estimated at `cost` seconds, on the bar of the whole time budget."""
        return setup.budget_part(self.progress, self.st, self.s.time_budget, self.wall, cost, what)

    # ------------------------------------------------------------------------------------ state
    def keep(self) -> torch.Tensor:
        return as_tensor(self.st["keep"], torch.bool)

    def rescore(self, model) -> list:
        """Scores of `model`'s heads on the calibration examples by the phase's metric (or the fixed order), as
        the state holds them."""
        if self.order is not None:
            return as_list(self.order)
        return as_list(setup.head_scores(model, self.data.calib, self.s.metric, self.st["phase"]))

    def score_cost(self, ratio: float, phase: str) -> float:
        metric = phase_metric(self.s.metric, phase)
        return 0.0 if self.order is not None else self.costs.score(self.counts["calib"], ratio, metric)

    def save(self, model=None) -> None:
        self.st["wall"] = self.wall()
        if self.store is not None:
            self.store.write(self.st, model)

    def restore(self, state: dict, model) -> None:
        self.st, self.resumed = state, True
        self.model = model.to(model_device(self.dense)) if model is not None else self.dense
        self.costs = CostModel(**state["plan"]["costs"])
        self.started = time.perf_counter() - state["wall"]

    def start(self) -> None:
        """Measure the dense model and plan the time (`compress_setup`), score the dense model's heads."""
        costs, dense_val = setup.measure_costs(self.dense, self.data, self.s, self.ladder, self.setup_report)
        self.costs = costs
        spent = self.wall()  # everything so far (data preparation by the caller included), measured once
        plan = setup.make_plan(costs, dense_val, self.s, spent, self.counts["test"])
        self.st = {"plan": plan, "phase": "least-squares", "keep": as_list(kept_mask(self.dense)), "val": dense_val,
                   "scores": None, "upper": None, "spent": spent, "wall": spent, "distilled": 0, "steps": [],
                   "retraining_free": None, "stopped_by": None, "best_row": None, "model_dir": None}
        self.setup_report(f"scoring the heads ({phase_metric(self.s.metric, 'least-squares')}) on "
                          f"{self.counts['calib']} training examples")
        self.st["scores"] = self.rescore(self.dense)
        self.st["spent"] += self.score_cost(1.0, "least-squares")
        self.save()

    def setup_report(self, message: str) -> None:
        report(self.progress, self.wall() / self.s.time_budget, f"setting up: {message}")

    # ------------------------------------------------------------------------------------ the climb
    def climb(self, phase: str) -> str:
        """Candidates up the ladder until no step is left ("target": the top of the ladder; "budget": every
        smaller step failed), the phase's time is up ("time") or a stop is asked ("cancelled")."""
        st, plan = self.st, self.st["plan"]
        limit = plan["least_squares_until"] if phase == "least-squares" and self.s.distill else plan["budget_s"]
        while True:
            if self.stopping():
                return "cancelled" if self.cancelled() else "time"
            keep = self.keep()
            level, top = self.ladder.level(keep), len(self.ladder.removed) - 1
            high = top if st["upper"] is None else st["upper"] - 1
            if high <= level:
                return "target" if high == top else "budget"
            first_jump = phase == "distil" and st["upper"] is None
            fraction = self.s.distil_step_fraction if first_jump else self.s.step_fraction
            level = level + max(1, math.ceil(fraction * (high - level)))
            candidate = self.ladder.mask(level, as_tensor(self.st["scores"]), keep)
            if not bool((keep & ~candidate).any()):  # the guardrails allow no more
                return "target"
            costs = self.step_costs(phase, keep, candidate)
            if st["spent"] + sum(costs) > limit:
                return "time"
            if not self.attempt(phase, level, candidate, costs):
                return "cancelled" if self.cancelled() else "time"

    def step_costs(self, phase: str, keep: torch.Tensor, candidate: torch.Tensor) -> tuple[float, float]:
        """Estimated seconds of one candidate: (refit + distillation + judgement, scoring if accepted)."""
        c, n, ratio = self.costs, self.counts, self.ratio(candidate)
        base = 1.0 if phase == "least-squares" else self.ratio(keep)
        build = c.refit(n["calib"], base, self.feed_forward and phase == "least-squares") + c.copies(2, base)
        judged = self.slice_cost(candidate) if phase == "distil" else c.evaluate(n["judge"], ratio)
        return build + judged, self.score_cost(ratio, phase)

    def attempt(self, phase: str, level: int, keep: torch.Tensor, costs: tuple[float, float]) -> bool:
        """Build, judge and keep or roll back one candidate; False when stopped before its judgement.

        A distillation candidate that misses the budget is distilled for another slice and judged again while
        it still improves and could reach the budget at its pace (`worth_another_slice`), up to `max_slices`
        slices and as the ledger allows: a candidate that has not recovered yet is not a size that cannot
        recover (on `minilm-tweets`, 65 of 72 heads removed: 1.95 points under dense after 100 steps, 0.25 over
        after 300)."""
        started, st, threshold = time.perf_counter(), self.st, self.st["plan"]["threshold"]
        steps = st["plan"]["slice_steps"] if phase == "distil" else 0
        progress = self.part(costs[0], f"{phase}: trying {int((~keep).sum())} heads removed")
        base = self.dense if phase == "least-squares" else self.model
        model = self.refit(base, keep, phase, sub(progress, 0.0, 0.1 if steps else 0.8, "least squares: "))
        vals: list[float] = []
        spent, extra = costs[0], self.slice_cost(keep) if steps else 0.0
        while True:
            if steps:
                model = self.distil(model, steps, progress, slice_=len(vals))
                if model is None:
                    return False
            report(progress, 0.95, "judging on validation")
            vals.append(float(evaluate(model, self.data.judge)[setup.METRIC_KEY]))
            if not steps or vals[-1] >= threshold or not self.another_slice(vals, spent, extra):
                break
            spent += extra
            progress = self.part(extra, f"{phase}: {int((~keep).sum())} heads removed, "
                                        f"val {vals[-1]:.4f} after slice {len(vals)}; one more")
        value, accepted = vals[-1], vals[-1] >= threshold
        st["spent"] += spent
        self.record(phase, keep, value, accepted, steps * len(vals), started, vals if steps else [])
        if accepted:
            self.model = model
            st.update(keep=as_list(keep), val=value, scores=self.rescore(model))
            st["spent"] += costs[1]
        else:
            st["upper"] = level if st["upper"] is None else min(st["upper"], level)
        self.save(model if accepted else None)
        return True

    def refit(self, base, keep: torch.Tensor, phase: str, progress: Progress | None = None):
        """`base` physically pruned to `keep`, the kept heads' output projections refitted by least squares; the
        feed-forward outputs too in the least-squares phase (where the model allows): distillation only starts
        from least squares, not worth the feed-forward refit's doubled cost."""
        recovery = lsq_recover(base, keep, self.data.calib, method=self.s.lsq_method, target=self.s.lsq_target,
                               feed_forward=self.feed_forward and phase == "least-squares", progress=progress)
        return prune(recovery.bake(base), keep)

    def slice_cost(self, keep: torch.Tensor) -> float:
        """Estimated seconds of one more slice of a candidate `keep`: its distillation and its judgement."""
        ratio = self.ratio(keep)
        return (self.costs.distil(self.st["plan"]["slice_steps"], ratio) + self.costs.copies(1, ratio)
                + self.costs.evaluate(self.counts["judge"], ratio))

    def another_slice(self, vals: list[float], spent: float, slice_cost: float) -> bool:
        """Whether a candidate that missed the budget after `len(vals)` slices (its validation values `vals`,
        `spent` estimated seconds so far, `slice_cost` per further slice) gets one more (`worth_another_slice`,
        with the slices that `max_slices` and the ledger leave)."""
        affordable = int((self.st["plan"]["budget_s"] - self.st["spent"] - spent) // slice_cost)
        left = min(self.s.max_slices - len(vals), affordable)
        return worth_another_slice(vals, self.st["plan"]["threshold"], left) and not self.stopping()

    def distil(self, model, steps: int, progress: Progress | None, slice_: int = 0):
        """`model` distilled from the dense model for `steps` steps (seeded per candidate and slice); None if
        stopped."""
        seed = self.s.seed + len(self.st["steps"]) + 1000 * slice_
        settings = FinetuneSettings(distill=True, temperature=self.s.temperature, alpha=self.s.alpha, max_steps=steps,
                                    lr=self.s.lr, seed=seed)
        trained, done = recover(model, self.data.train, settings, teacher=self.dense, should_stop=self.stopping,
                                progress=progress)
        if done.stopped:
            return None
        self.st["distilled"] += done.steps
        return trained.to(model_device(self.dense))  # trained where Accelerate puts it; kept beside the dense model

    def record(self, phase: str, keep: torch.Tensor, value: float, accepted: bool, steps: int, started: float,
               slice_vals: list[float] | None = None):
        """A trajectory row (`CompressStep`'s fields) for the candidate `keep`."""
        kept, rows = int(keep.sum()), self.st["steps"]
        rows.append({"step": len(rows) + 1, "phase": phase, "heads_removed": keep.numel() - kept, "heads_kept": kept,
                     "val": value, "accepted": accepted, "distill_steps": steps,
                     "seconds": time.perf_counter() - started, "elapsed": self.wall(), "test": None,
                     "slice_vals": list(slice_vals or [])})
        if accepted:
            self.st["best_row"] = len(rows) - 1

    # ------------------------------------------------------------------------------------ phases and the end
    def run(self) -> tuple[object, "CompressResult"]:
        """The phases from wherever the state stands; returns (best model, result)."""
        st = self.st
        if st["phase"] == "least-squares":
            reason = self.climb("least-squares")
            if reason == "cancelled":
                return self.finish(cancelled=True)
            st["retraining_free"] = {"keep": st["keep"], "val": st["val"], "stopped_by": reason, "row": st["best_row"]}
            self.retraining_free_model = self.model
            st.update(phase="distil" if self.s.distill else "done", upper=None,
                      stopped_by=None if self.s.distill else reason)
            if self.s.distill and phase_metric(self.s.metric, "distil") != phase_metric(self.s.metric, "least-squares"):
                st.update(scores=self.rescore(self.model),
                          spent=st["spent"] + self.score_cost(self.ratio(self.keep()), "distil"))
            self.save()
        if st["phase"] == "distil":
            reason = self.climb("distil")
            if reason == "cancelled":
                return self.finish(cancelled=True)
            st.update(phase="polish", stopped_by=reason)
            self.save()
        if st["phase"] == "polish":
            if not self.polish():
                return self.finish(cancelled=True)
            st["phase"] = "done"
            self.save()
        return self.finish(cancelled=False)

    def polish(self) -> bool:
        """Distil the best model with the time left (at most `POLISH_SLICES` slices, or `polish_steps`); keep it
        when it still meets the budget. False when a stop was asked."""
        st, plan, keep = self.st, self.st["plan"], self.keep()
        if bool(keep.all()) or self.stopping():
            return not self.cancelled()
        ratio = self.ratio(keep)
        judge = self.costs.evaluate(self.counts["judge"], ratio)
        affordable = int(POLISH_SLACK * (plan["budget_s"] - st["spent"] - judge) // self.costs.distil(1, ratio))
        wanted = self.s.polish_steps if self.s.polish_steps is not None else POLISH_SLICES * plan["slice_steps"]
        steps = min(wanted, affordable)
        if steps < (1 if self.s.polish_steps is not None else max(1, plan["slice_steps"] // 4)):
            return True
        started, cost = time.perf_counter(), self.costs.distil(steps, ratio) + self.costs.copies(1, ratio) + judge
        model = self.distil(self.model, steps, self.part(cost, f"polish: {steps} distillation steps"))
        if model is None:
            return not self.cancelled()
        value = float(evaluate(model, self.data.judge)[setup.METRIC_KEY])
        accepted = value >= plan["threshold"]
        st["spent"] += cost
        self.record("polish", keep, value, accepted, steps, started)
        if accepted:
            self.model = model
            st["val"] = value
        self.save(model if accepted else None)
        return True

    def retraining_free(self):
        """The least-squares phase's model (rebuilt from the dense model after a resume: least squares is exact)."""
        keep = as_tensor(self.st["retraining_free"]["keep"], torch.bool)
        if torch.equal(keep, kept_mask(self.dense)):
            return self.dense
        if self.retraining_free_model is None:
            self.retraining_free_model = self.refit(self.dense, keep, "least-squares")
        return self.retraining_free_model

    def tests(self) -> tuple[float, float, float]:
        """Test quality of the dense, the retraining-free and the final model: the test split's only use."""
        c, n, st = self.costs, self.counts["test"], self.st
        found: dict[int, float] = {}

        def test(model, keep: torch.Tensor) -> float:
            if id(model) not in found:
                cost = c.evaluate(n, self.ratio(keep))
                tested = evaluate(model, self.data.test, progress=self.part(cost, "testing on the test split"))
                found[id(model)] = float(tested[setup.METRIC_KEY])
                st["spent"] += cost
            return found[id(model)]

        dense = test(self.dense, kept_mask(self.dense))
        free = test(self.retraining_free(), as_tensor(st["retraining_free"]["keep"], torch.bool))
        final = test(self.model, self.keep())
        for row, value in ((st["retraining_free"]["row"], free), (st["best_row"], final)):
            if row is not None:
                st["steps"][row]["test"] = value
        return dense, free, final

    def finish(self, *, cancelled: bool) -> tuple[object, "CompressResult"]:
        """(best model, result); the test split is evaluated unless the run was cancelled."""
        st = self.st
        if st["retraining_free"] is None:  # cancelled during the least-squares phase
            st["retraining_free"] = {"keep": st["keep"], "val": st["val"], "stopped_by": "cancelled",
                                     "row": st["best_row"]}
        dense_test, free_test, test = self.tests() if not cancelled else (None, None, None)
        keep, total = self.keep(), self.ladder.total
        free = st["retraining_free"]
        free_keep = as_tensor(free["keep"], torch.bool)
        retraining_free = {"keep": free_keep, "heads_removed": total - int(free_keep.sum()),
                           "heads_removed_frac": (total - int(free_keep.sum())) / total, "val": free["val"],
                           "test": free_test, "stopped_by": free["stopped_by"]}
        removed = total - int(keep.sum())
        result = CompressResult(
            keep=keep, heads_total=total, heads_removed=removed, heads_removed_frac=removed / total,
            metric_key=setup.METRIC_KEY, max_drop=self.s.max_drop, dense_val=st["plan"]["dense_val"], val=st["val"],
            threshold=st["plan"]["threshold"], dense_test=dense_test, test=test, retraining_free=retraining_free,
            trajectory=[CompressStep(**{**row, "slice_vals": tuple(row.get("slice_vals", ()))}) for row in st["steps"]],
            stopped_by="cancelled" if cancelled else st["stopped_by"], seconds=self.wall(),
            distill_steps=st["distilled"], plan=dict(st["plan"]), examples=dict(self.counts), resumed=self.resumed)
        return self.model, result


def compress(dense, data: CompressData, settings: CompressSettings | None = None, *, order: torch.Tensor | None = None,
             state_dir=None, resume: bool = False, should_stop: Callable[[], bool] | None = None,
             progress: Progress | None = None, started: float | None = None,
             **overrides) -> tuple[object, CompressResult]:
    """The smallest model found whose quality on `data.judge` stays within `max_drop` points of dense, within
    `time_budget` seconds (see the module doc); returns (that model, physically pruned; `CompressResult`).

    dense: the model to compress (never modified; it is also the distillation teacher). settings: a
    `CompressSettings` (or its fields as keyword `overrides`). order: a fixed ranking (L, H), higher = more
    important (e.g. `iterative_scores(..., "ablation")`), instead of re-scoring by `settings.metric`.
    state_dir: a folder for the state after every step; `resume=True` continues the run saved there (same
    model, data and settings; none there = a fresh start) and ends as the uninterrupted run would.
    should_stop(): asked between operations and before every training step; True ends the run at once with
    `stopped_by="cancelled"` and no test evaluation (the state keeps the last finished step).
    started: `time.perf_counter()` when the time budget began (default: now), so that the caller's data
    preparation counts. Bad settings raise `UserError` before any work.
    """
    settings = dataclasses.replace(settings or CompressSettings(), **overrides)
    settings.check()
    data.check(settings.distill)
    if order is not None:
        order = torch.as_tensor(order, dtype=torch.float32)
        if tuple(order.shape) != head_grid(dense):
            raise UserError(f"the order is shaped {tuple(order.shape)}, the model's heads are {head_grid(dense)}",
                            option="order")
    if resume and state_dir is None:
        raise UserError("resuming needs the state folder of the run to continue", option="state_dir")
    started = time.perf_counter() if started is None else started
    store = StateStore(state_dir, run_record(dense, data, settings, order)) if state_dir is not None else None
    run = _Run(dense, data, settings, order, store, should_stop, progress, started)
    if resume and store.exists():
        run.restore(*store.read())
    else:
        if store is not None:
            store.clear()
        run.start()
    return run.run()
