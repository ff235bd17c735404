"""`headprune finetune`: prune to a mask, then recover by fine-tuning with distillation from the dense model.

Ctrl-C stops after the current step, saves a checkpoint and exits with 130 (a second Ctrl-C aborts at once).
"""
from __future__ import annotations

import argparse
import sys

from ..core.distributed import init, is_main
from ..core.errors import UserError
from ..core.log import get_logger
from ..core.records import jsonable
from ..model.storage import save_pruned
from ..recovery.checkpoints import clear_checkpoints
from ..recovery.finetune import FinetuneSettings
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
    read_keep,
    resumable_outputs,
)

log = get_logger(__name__)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, default_split="train")
    parser.add_argument("--mask", required=True, metavar="MASK.json", help="the heads to keep (the model is pruned to it)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the fine-tuned pruned model")
    train = parser.add_argument_group("training")
    train.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                       help="distil from the dense model (default: on)")
    train.add_argument("--temperature", type=finite, default=2.0, help="distillation temperature (default: 2)")
    train.add_argument("--alpha", type=finite, default=0.5, help="distillation share of the loss (default: 0.5)")
    train.add_argument("--epochs", type=positive_int, default=1, help="passes over the training data (default: 1)")
    train.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimizer steps")
    train.add_argument("--lr", type=finite, default=5e-5, help="peak learning rate (default: 5e-5)")
    train.add_argument("--grad-accum", type=positive_int, default=1, help="batches per optimizer step and process")
    train.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights, merged at the end")
    train.add_argument("--lora-rank", type=positive_int, default=8, help="LoRA rank (default: 8)")
    train.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="where checkpoints go (default: OUT.checkpoints)")
    train.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N", help="save a checkpoint every N steps")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument("--eval-limit", type=positive_int, default=None, metavar="N",
                       help="evaluate before/after on a seeded sample of N validation and test examples")
    train.add_argument("--no-eval", action="store_true", help="skip the evaluations before and after")
    add_overwrite_arg(parser)
    add_output_args(parser)


def checkpoint_dir(args: argparse.Namespace) -> str:
    return beside_out(args, args.checkpoint_dir, "checkpoints")


def outputs(args: argparse.Namespace) -> list:
    return resumable_outputs(args, checkpoint_dir(args), "checkpoint_dir")


def _settings(args: argparse.Namespace) -> FinetuneSettings:
    settings = FinetuneSettings(distill=args.distill, temperature=args.temperature, alpha=args.alpha,
                                epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, lora=args.lora,
                                lora_rank=args.lora_rank, grad_accum=args.grad_accum, seed=args.seed)
    settings.check()
    if settings.distill and settings.temperature <= 0:
        raise UserError(f"the distillation temperature must be > 0, got {settings.temperature}", option="temperature")
    if settings.distill and not 0 <= settings.alpha <= 1:
        raise UserError(f"alpha (the distillation share of the loss) must lie in [0, 1], got {settings.alpha}",
                        option="alpha")
    return settings


def _eval_batches(args: argparse.Namespace, bench) -> tuple[dict, str]:
    """Validation and test batches, or the training data itself (said loudly) when the data has no others."""
    if args.no_eval:
        return {}, "none"
    if bench.workload.split is None:
        log.warning("the data is one file without splits: the before/after numbers are measured on the training "
                    "data itself, not on held-out examples; give the file a 'split' column for honest numbers")
        return {"val": bench.workload.batches}, "training data (no held-out split)"
    return {name: bench.split_batches(split, limit=args.eval_limit)[1]
            for name, split in (("val", "validation"), ("test", "test"))}, "validation and test splits"


def run(args: argparse.Namespace) -> dict:
    settings = _settings(args)
    init()
    bench = open_bench(args)
    keep = read_keep(args.mask, bench)
    evals, evaluated_on = _eval_batches(args, bench)
    folder = checkpoint_dir(args)
    if args.overwrite and not args.resume:  # a fresh start in headprune's own folder (checked before any work)
        clear_checkpoints(folder)
    with progress_bar(args, "fine-tuning") as bar:
        model, report = interruptible(lambda should_stop: bench.finetune(
            keep, bench.workload.batches, settings, val_batches=evals.get("val"), test_batches=evals.get("test"),
            checkpoint_dir=folder, checkpoint_every=args.checkpoint_every, resume=args.resume,
            should_stop=should_stop, progress=bar))
    if report.stopped:
        if is_main():
            print(f"headprune: interrupted at step {report.steps}; checkpoint saved in {report.checkpoint}; "
                  "run the same command with --resume to continue", file=sys.stderr)
        raise KeyboardInterrupt
    summary = {k: report[k] for k in ("steps", "start_step", "train_seconds", "seconds", "final_loss", "before",
                                      "after", "dense", "settings", "heads_kept", "parameters", "world_size",
                                      "resumed_from")}
    loaded = bench.workload.loaded
    if is_main():
        meta = {"source_model": loaded.model_id, "mask": args.mask, "fine_tuned_by": "headprune finetune",
                "data": args.data, "split": bench.workload.split, "evaluated_on": evaluated_on,
                **{k: summary[k] for k in ("steps", "settings", "before", "after", "dense")}}
        save_pruned(model, args.out, loaded.tokenizer, meta=jsonable(meta), overwrite=args.overwrite)
    return {"command": "finetune", "model": loaded.model_id, "out": args.out, "checkpoint_dir": folder,
            "evaluated_on": evaluated_on, **summary}




def render(result: dict) -> str:
    lines = [f"model       {result['model']} → {result['out']} ({result['heads_kept']} heads, "
             f"{result['parameters']:,} parameters)",
             f"training    {result['steps']} steps in {result['train_seconds']:.1f} s"
             + (f" (resumed at step {result['start_step']})" if result["start_step"] else "")
             + f", final loss {result['final_loss']:.4f}"]
    for split in ("val", "test"):
        cells = [f"{label} {result[key][split]['accuracy']:.4f}" for key, label in
                 (("dense", "dense"), ("before", "pruned"), ("after", "fine-tuned")) if split in result[key]]
        if cells:
            lines.append(f"{split + ' accuracy':<12}" + " · ".join(cells))
    lines.append(f"evaluated   on {result['evaluated_on']}")
    return "\n".join(lines)


COMMAND = Command("finetune", "recover a pruned model's accuracy by fine-tuning (with distillation)", build, run,
                  render, outputs)
