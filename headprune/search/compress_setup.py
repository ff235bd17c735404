"""The start of a compress run (`headprune.search.compress`): the dense model measured on the validation
examples (the budget's threshold, the per-example forward time), a distillation step timed at dense size and at
the top of the ladder, a model copy timed, and the time plan every later decision reads."""
from __future__ import annotations

import time
from typing import Callable

import torch

from ..core.progress import Progress, format_seconds, report
from ..evaluation.cost import flops_per_token
from ..evaluation.loop import evaluate
from ..model.intervene import private_copy
from ..model.layout import head_grid, kept_mask
from ..model.surgery import prune
from ..recovery.finetune import FinetuneSettings, recover
from ..recovery.lsq import check_feed_forward, feed_forward_refit_applies
from ..recovery.lsq_order import reconstruction_scores
from ..scoring.api import score_heads
from .compress_plan import (
    CompressData,
    CompressSettings,
    CostModel,
    Ladder,
    Stopwatch,
    phase_metric,
    typical_batches,
)

SLICE_SHARE, SLICE_RANGE = 0.1, (8, 500)  # a distillation slice: a tenth of the loop's time, in steps
RESERVE_MARGIN = 1.15  # the final evaluations' estimate, padded
METRIC_KEY = "accuracy"  # classification accuracy; next-token accuracy for language models


def head_scores(model, calib: list, metric: str, phase: str) -> torch.Tensor:
    """(L, H) scores of `model`'s heads on the calibration examples by `metric` as `phase` reads it
    (`phase_metric`), higher = more important (NaN: gone)."""
    metric = phase_metric(metric, phase)
    if metric == "reconstruction":
        return reconstruction_scores(model, calib)
    return score_heads(model, calib, metric, cache=False)


def feed_forward_refit(dense, settings: CompressSettings) -> bool:
    """Whether the run's least squares refits the feed-forward outputs too (`lsq_feed_forward`, None: where
    the model allows); `UserError` when asked for where it cannot apply."""
    if settings.lsq_feed_forward:
        check_feed_forward(dense, settings.lsq_target, option="lsq_feed_forward")
    applies = feed_forward_refit_applies(dense, settings.lsq_target)
    return applies if settings.lsq_feed_forward is None else settings.lsq_feed_forward


def budget_part(progress: Progress | None, st: dict, budget: float, wall: Callable[[], float], cost: float,
                what: str) -> Progress | None:
    """Progress of one operation estimated at `cost` seconds, on the bar of the whole time `budget` (the run's
    state `st` says what was spent and what is kept; `wall()`: seconds since the run began)."""
    if progress is None:
        return None
    spent = st["spent"]

    def inner(fraction: float, message: str = "") -> None:
        kept = int(torch.as_tensor(st["keep"], dtype=torch.bool).sum())
        left = format_seconds(max(0.0, budget - wall()))
        report(progress, (spent + fraction * cost) / budget,
               f"{what}; {kept} heads kept, val {st['val']:.4f} (≥ {st['plan']['threshold']:.4f} "
               f"needed); at most {left} left" + (f" · {message}" if message else ""))
    return inner


def probe(model, dense, train: list, lr: float) -> float:
    """Seconds of one distillation step of `model` (the dense model or a pruned copy; the teacher is `dense`):
    three steps on a copy, on batches of typical size (`typical_batches`), timed from the end of the first (its
    warm-up excluded)."""
    watch = Stopwatch()
    recover(model, typical_batches(train), FinetuneSettings(max_steps=3, lr=lr), teacher=dense, progress=watch)
    return max(watch.per_item([None] * 3), 1e-6)


def measure_costs(dense, data: CompressData, settings: CompressSettings, ladder: Ladder,
                  say: Callable[[str], None]) -> tuple[CostModel, float]:
    """(the cost model, the dense model's validation quality), measured: a validation pass, a model copy and,
    when distilling, a step at dense size and one of the ladder's top (its smallest model); `say(message)`
    reports each part."""
    say(f"measuring the dense model on {data.count('judge')} validation examples")
    watch = Stopwatch()
    dense_val = float(evaluate(dense, data.judge, progress=watch)[METRIC_KEY])
    say("timing a distillation step")
    copied = time.perf_counter()
    private_copy(dense)
    copy_s = time.perf_counter() - copied
    step_s = probe(dense, dense, data.train, settings.lr) if settings.distill else 0.0
    small = {}
    smallest = ladder.mask(len(ladder.removed) - 1, torch.zeros(head_grid(dense)), kept_mask(dense))
    if settings.distill and not bool(smallest.all()):
        say("timing a distillation step of the smallest model")
        small = {"small_step_s": probe(prune(dense, smallest), dense, data.train, settings.lr),
                 "small_ratio": flops_per_token(dense, smallest) / flops_per_token(dense)}
    costs = CostModel(forward_s=watch.per_item(data.judge), step_s=step_s, copy_s=copy_s, **small)
    return costs, dense_val


def make_plan(costs: CostModel, dense_val: float, settings: CompressSettings, spent: float, test_examples: int) -> dict:
    """The time plan (JSON-ready, saved with the state): the budget's threshold, the ledger's limits (`budget_s`
    keeps the final test evaluations' estimate, padded by `RESERVE_MARGIN`, in reserve; the wall-clock
    `deadline_s` keeps the unpadded one), the distillation slice (`SLICE_SHARE` of the loop's time, in steps)
    and the end of the least-squares phase. `spent`: seconds already gone (setup included)."""
    final = 3 * costs.evaluate(test_examples)  # dense, retraining-free and final model on test
    budget = settings.time_budget - RESERVE_MARGIN * final
    slices = settings.distill_steps or (min(max(round(SLICE_SHARE * (budget - spent) / costs.step_s), SLICE_RANGE[0]),
                                            SLICE_RANGE[1]) if costs.step_s else 0)
    return {"costs": costs.to_dict(), "dense_val": dense_val, "threshold": dense_val - settings.max_drop / 100,
            "setup_s": spent, "budget_s": budget, "deadline_s": settings.time_budget - final, "slice_steps": slices,
            "least_squares_until": spent + settings.retraining_free_share * max(0.0, budget - spent)}
