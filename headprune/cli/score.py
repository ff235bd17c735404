"""`headprune score`: every head's importance by one metric, optionally written as a scores file."""
from __future__ import annotations

import argparse

from ..core.distributed import init, is_main, launched
from ..model.schema import write_scores
from ..scoring.registry import METRICS
from .common import (
    Command,
    add_model_args,
    add_output_args,
    add_overwrite_arg,
    open_bench,
    progress_bar,
    read_keep,
)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--metric", default="gradient", help=f"{', '.join(METRICS)} (default: gradient)")
    parser.add_argument("--mask", default=None, metavar="MASK.json", help="score under this mask (iterative pruning)")
    parser.add_argument("--normalise-layers", action="store_true", help="divide each layer's scores by their l2 norm")
    parser.add_argument("--global-minmax", action="store_true", help="then rescale all scores to [0, 1]")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the score cache")
    parser.add_argument("--out", default=None, metavar="SCORES.json",
                        help="write the scores as JSON (opens in the dashboard's Importance page)")
    add_overwrite_arg(parser)
    add_output_args(parser)


def outputs(args: argparse.Namespace) -> list:
    return [(args.out, "scores", "out")]


def run(args: argparse.Namespace) -> dict:
    init()  # under torchrun: every process scores its share of the batches, the sums are all-reduced
    bench = open_bench(args)
    keep = read_keep(args.mask, bench) if args.mask else None
    with progress_bar(args, f"scoring ({args.metric})") as bar:
        record = bench.score(args.metric, keep=keep, normalise_layers=args.normalise_layers,
                             global_minmax=args.global_minmax, seed=args.seed, cache=not args.no_cache and not launched(),
                             progress=bar)
    record = record.replace(options={**record.options, "mask": args.mask})
    if args.out and is_main():
        write_scores(args.out, record)
    return {"command": "score", "model": record.model_id, "metric": record.metric, "options": record.options,
            **record.data, "scores": record.scores, "out": args.out}


def render(result: dict) -> str:
    rows = result["scores"].tolist()
    lines = [f"model   {result['model']}", f"metric  {result['metric']} on {result['data']} "
             f"[{result['split'] or 'default split'}], {result['n']:,} examples",
             "layer   " + " ".join(f"{h:>8d}" for h in range(len(rows[0])))]
    lines += [f"{layer:>5d}   " + " ".join("       -" if v != v else f"{v:8.4f}" for v in row)
              for layer, row in enumerate(rows)]
    if result["out"]:
        lines.append(f"written to {result['out']}")
    return "\n".join(lines)


COMMAND = Command("score", "score every head's importance", build, run, render, outputs)
