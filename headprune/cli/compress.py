"""`headprune compress`: the smallest model within a quality budget, found within a time budget — heads removed
step by step, each step refitted by least squares and distilled from the dense model, judged on validation,
tested once at the end (`headprune.search.compress`).

Ctrl-C stops after the current operation with the state of the last finished step saved; `--resume` continues.
"""
from __future__ import annotations

import argparse
import sys

from ..core.log import get_logger
from ..core.types import COMPRESS_UNITS
from ..model.schema import read_scores
from ..search.compress_plan import RESCORE_METRICS, CompressSettings
from .common import (
    Command,
    add_model_args,
    add_output_args,
    add_overwrite_arg,
    beside_out,
    finite,
    interruptible,
    open_bench,
    positive_int,
    progress_bar,
    resumable_outputs,
    whole,
)

log = get_logger(__name__)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, default_split="test")  # the workload is the test data; judged on validation
    goal = parser.add_argument_group("goal")
    goal.add_argument("--max-drop", type=finite, default=1.0, metavar="POINTS",
                      help="quality points (accuracy × 100) the model may lose on validation (default: 1.0)")
    goal.add_argument("--time-budget", type=finite, default=600.0, metavar="SECONDS",
                      help="seconds for everything, final test evaluation included (default: 600)")
    goal.add_argument("--target-heads", type=finite, default=None, metavar="FRACTION",
                      help="stop once this fraction of all heads is removed (default: as many as the budget allows)")
    goal.add_argument("--unit", default="head", choices=COMPRESS_UNITS,
                      help="remove heads, whole KV groups, or the same heads in every layer (uniform: runtime-safe "
                           "shapes, whole groups with GQA) (default: head)")
    goal.add_argument("--min-heads-per-layer", type=whole, default=1, help="heads every layer keeps (default: 1)")
    how = parser.add_argument_group("how")
    how.add_argument("--metric", default="auto", choices=RESCORE_METRICS,
                     help="score that ranks heads, re-computed after every step (default: auto = reconstruction, "
                          "what least squares makes up for best, in the least-squares phase; gradient once "
                          "distillation retrains)")
    how.add_argument("--order", default=None, metavar="SCORES.json",
                     help="a fixed ranking instead (`headprune score --out`, e.g. an ablation order)")
    how.add_argument("--judge-examples", type=whole, default=2000, metavar="N",
                     help="validation examples the budget is judged on (0: all; default: 2000)")
    how.add_argument("--calib-examples", type=positive_int, default=1024, metavar="N",
                     help="training examples for least squares and the scores (default: 1024)")
    how.add_argument("--train-examples", type=positive_int, default=None, metavar="N",
                     help="training examples for distillation (default: the whole training split)")
    how.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                     help="distil between the steps (--no-distill: least squares only; default: on)")
    how.add_argument("--distill-steps", type=positive_int, default=None, metavar="N",
                     help="distillation steps per slice (default: a tenth of the time budget)")
    how.add_argument("--max-slices", type=positive_int, default=8, metavar="N",
                     help="a candidate that misses the budget is distilled for another slice while it still "
                          "improves, up to N slices (1: judge once; default: 8)")
    how.add_argument("--distil-step-fraction", type=finite, default=1.0, metavar="FRACTION",
                     help="share of the way to the top the first distillation step goes (1: straight to the "
                          "target; after a roll-back the steps halve the gap) (default: 1.0)")
    how.add_argument("--polish-steps", type=whole, default=None, metavar="N",
                     help="distillation steps of the final polish (default: what the time left affords)")
    how.add_argument("--retraining-free-share", type=finite, default=0.5, metavar="FRACTION",
                     help="share of the time the least-squares phase may take at most (default: 0.5)")
    how.add_argument("--refit-ffn", action=argparse.BooleanOptionalAction, default=None,
                     help="least squares also refits the feed-forward outputs (post-norm encoders; default: where "
                          "the model allows)")
    how.add_argument("--lr", type=finite, default=1e-4, help="distillation learning rate (default: 1e-4)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the compressed model (load_pruned)")
    parser.add_argument("--state-dir", default=None, metavar="DIR",
                        help="where the state of every step goes (default: OUT.compress-state)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in the state folder")
    add_overwrite_arg(parser)
    add_output_args(parser)


def state_dir(args: argparse.Namespace) -> str:
    return beside_out(args, args.state_dir, "compress-state")


def outputs(args: argparse.Namespace) -> list:
    return resumable_outputs(args, state_dir(args), "state_dir")


def _settings(args: argparse.Namespace) -> CompressSettings:
    settings = CompressSettings(max_drop=args.max_drop, time_budget=args.time_budget, target_heads=args.target_heads,
                                unit=args.unit, min_heads_per_layer=args.min_heads_per_layer, metric=args.metric,
                                distill=args.distill, distill_steps=args.distill_steps, polish_steps=args.polish_steps,
                                max_slices=args.max_slices, distil_step_fraction=args.distil_step_fraction,
                                retraining_free_share=args.retraining_free_share, lr=args.lr, seed=args.seed,
                                lsq_feed_forward=args.refit_ffn)
    settings.check()
    return settings


def run(args: argparse.Namespace) -> dict:
    settings = _settings(args)
    bench = open_bench(args)
    order = read_scores(args.order, bench.model, model_id=bench.workload.loaded.model_id).scores if args.order else None
    folder = state_dir(args)
    with progress_bar(args, "compressing") as bar:
        model, result = interruptible(lambda should_stop: bench.compress(
            settings, judge_examples=args.judge_examples or None, calib_examples=args.calib_examples,
            train_examples=args.train_examples, test_batches=bench.workload.batches, order=order, state_dir=folder,
            resume=args.resume, should_stop=should_stop, progress=bar))
    if result.stopped_by == "cancelled":
        print(f"headprune: interrupted after step {len(result.trajectory)}; the state is in {folder}; run the same "
              "command with --resume to continue", file=sys.stderr)
        raise KeyboardInterrupt
    if not result.heads_removed:
        log.warning("no head could go within %s points in %g s (stopped by %s); the saved model is the dense one: "
                    "allow a larger --max-drop or --time-budget", args.max_drop, args.time_budget, result.stopped_by)
    result, saved = bench.save_compressed(model, result, args.out, overwrite=args.overwrite)
    return {"command": "compress", "model": bench.workload.loaded.model_id, "out": args.out, "state_dir": folder,
            "tested_on": bench.workload.split, **result.report(), "reload_max_abs_diff": saved.max_abs_diff,
            "parameters_before": saved.params_before, "parameters_after": saved.params_after,
            "save_seconds": saved.seconds}


def render(result: dict) -> str:
    total = result["heads_total"]
    lines = [f"model            {result['model']} → {result['out']}",
             f"heads            {result['heads_kept']} of {total} kept ({result['heads_removed_frac']:.1%} removed); "
             f"parameters {result['parameters_before']:,} → {result['parameters_after']:,}",
             f"validation       {result['compressed_val_acc']:.4f} vs dense {result['dense_val_acc']:.4f} "
             f"(budget: ≥ {result['threshold']:.4f})",
             f"test             {result['compressed_test_acc']:.4f} vs dense "
             f"{result['dense_test_acc']:.4f} ({100 * (result['compressed_test_acc'] - result['dense_test_acc']):+.2f} "
             "points)",
             f"retraining-free  {result['retraining_free_heads_removed']} of {total} removed "
             f"({result['retraining_free_heads_removed_frac']:.1%}): "
             f"validation {result['retraining_free_val_acc']:.4f}, "
             f"test {result['retraining_free_test_acc']:.4f}",
             f"time             {result['seconds']:.0f} s, stopped by {result['stopped_by']}; "
             f"{result['distill_steps']} distillation steps",
             f"{'step':>5} {'phase':<14} {'removed':>7} {'val':>7} {'kept?':>6} {'seconds':>8}  val after each slice"]
    for row in result["trajectory"]:
        slices = " → ".join(f"{v:.4f}" for v in row.get("slice_vals") or ())
        lines.append(f"{row['step']:>5} {row['phase']:<14} {row['heads_removed']:>7} {row['val']:>7.4f} "
                     f"{'yes' if row['accepted'] else 'no':>6} {row['seconds']:>8.1f}  {slices}".rstrip())
    lines.append(f"saved to         {result['out']} (reloaded: max |Δ logit| {result['reload_max_abs_diff']:.1e}; "
                 f"report in compress_report.json)")
    return "\n".join(lines)


COMMAND = Command("compress", "the smallest model within a quality budget, found within a time budget", build, run,
                  render, outputs)
