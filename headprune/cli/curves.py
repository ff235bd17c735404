"""`headprune curves`: accuracy vs fraction of heads removed, against random orders."""
from __future__ import annotations

import argparse

from ..core.errors import UserError
from .common import (
    Command,
    add_model_args,
    add_output_args,
    finite,
    open_bench,
    progress_bar,
    whole,
)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--metric", default="gradient", help="score to prune by (default: gradient)")
    parser.add_argument("--mode", default="one-shot", choices=["one-shot", "iterative"])
    parser.add_argument("--step", type=finite, default=0.1, help="iterative: fraction of heads removed per round")
    parser.add_argument("--stop-below", type=finite, default=None, metavar="RATIO",
                        help="stop once accuracy falls below RATIO × dense (e.g. 0.9, HF bertology's masking threshold)")
    parser.add_argument("--fractions", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                        help="comma-separated fractions of heads removed")
    parser.add_argument("--random-seeds", type=whole, default=3, help="random-order baseline seeds (0: none)")
    add_output_args(parser)


def run(args: argparse.Namespace) -> dict:
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise UserError(f"fractions must be comma-separated numbers, got {args.fractions!r}", option="fractions") from None
    if args.stop_below is not None and not 0 <= args.stop_below <= 1:
        raise UserError(f"--stop-below is a fraction of the dense accuracy in [0, 1], got {args.stop_below}")
    if not 0 < args.step <= 1:
        raise UserError(f"the step must be a fraction in (0, 1], got {args.step}", option="step")
    bench = open_bench(args)
    with progress_bar(args, f"curve ({args.metric}, {args.mode})") as bar:
        found = bench.curves([args.metric], [args.mode], fractions, step=args.step, seeds=args.random_seeds,
                             stop_below=args.stop_below, progress=bar)
    baseline = found["baseline"]
    return {"command": "curves", "model": bench.workload.loaded.model_id, "metric": args.metric, "mode": args.mode,
            "curve": found["curves"].to_dict(orient="records"),
            "random": None if baseline is None else baseline.to_dict(orient="records")}


def render(result: dict) -> str:
    random = {row["fraction"]: row for row in result["random"] or []}
    lines = [f"model  {result['model']}, {result['metric']} ({result['mode']})",
             f"{'removed':>8} {'heads':>6} {'accuracy':>9} {'loss':>8}" + ("  random (min–max)" if random else "")]
    for row in result["curve"]:
        line = f"{row['fraction']:>8.0%} {row['heads_kept']:>6} {row['accuracy']:>9.4f} {row['loss']:>8.4f}"
        if row["fraction"] in random:
            r = random[row["fraction"]]
            line += f"  {r['mean']:.4f} ({r['low']:.4f}–{r['high']:.4f})"
        lines.append(line)
    return "\n".join(lines)


COMMAND = Command("curves", "accuracy vs fraction of heads removed, against random orders", build, run, render)
