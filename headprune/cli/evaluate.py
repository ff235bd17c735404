"""`headprune eval`: loss, accuracy and macro-F1 (or perplexity) on a split, optionally under a mask."""
from __future__ import annotations

import argparse

from .common import (
    Command,
    add_model_args,
    add_output_args,
    open_bench,
    progress_bar,
    read_keep,
)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--mask", default=None, metavar="MASK.json", help="evaluate with only the heads this mask keeps")
    parser.add_argument("--zero-shot", action="store_true",
                        help="causal LMs: also report zero-shot sentiment accuracy from label-word logits")
    add_output_args(parser)


def run(args: argparse.Namespace) -> dict:
    bench = open_bench(args)
    keep = read_keep(args.mask, bench) if args.mask else None
    if args.zero_shot:  # checked before the evaluation: it needs a causal LM and named labels
        bench.zero_shot_ready()
    with progress_bar(args, "evaluating") as bar:
        metrics = bench.evaluate(keep, progress=bar)
    loaded = bench.workload.loaded
    result = {"command": "eval", "model": loaded.model_id, "source": loaded.source, "task": loaded.task,
              "data": args.data, "split": args.split or args.default_split, **metrics.to_dict()}
    if keep is not None:
        result["mask"] = {"path": args.mask, "heads_kept": int(keep.sum()), "heads_total": int(keep.numel())}
    if args.zero_shot:
        with progress_bar(args, "zero-shot") as bar:
            result["zero_shot"] = bench.zero_shot(keep, progress=bar)
    return result


def render(result: dict) -> str:
    lines = [f"model     {result['model']} ({result['task']}, {result['source']})",
             f"data      {result['data']} [{result['split']}], {result['n']:,} examples"]
    if "mask" in result:
        lines.append(f"mask      {result['mask']['path']}: {result['mask']['heads_kept']} of "
                     f"{result['mask']['heads_total']} heads kept")
    if result["task"] == "classification":
        lines += [f"accuracy  {result['accuracy']:.4f}", f"macro-F1  {result['macro_f1']:.4f}"]
    else:
        label = "next-token accuracy" if result["task"] == "causal-lm" else "masked-token accuracy"
        lines += [f"perplexity  {result['perplexity']:.3f}", f"{label}  {result['next_token_accuracy']:.4f}",
                  f"tokens    {result['tokens']:,}"]
    lines.append(f"loss      {result['loss']:.4f}")
    if "zero_shot" in result:
        zs = result["zero_shot"]
        lines.append(f"zero-shot sentiment accuracy  {zs['accuracy']:.4f}"
                     f"{' calibrated' if zs.get('calibrated') else ''} "
                     f"(uncalibrated {zs['uncalibrated_accuracy']:.4f}; predicted "
                     f"{', '.join(f'{k} {v}' for k, v in zs['predicted'].items())})")
    lines.append(f"seconds   {result['seconds']:.1f}")
    return "\n".join(lines)


COMMAND = Command("eval", "evaluate a model on labelled data (optionally under a head mask)", build, run, render)
