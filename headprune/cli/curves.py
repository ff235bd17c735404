"""`headprune curves`: accuracy vs fraction of heads removed, against random orders."""
from __future__ import annotations

import argparse
import json

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
    parser.add_argument("--compress-report", default=None, metavar="REPORT.json",
                        help="also show the kept models of a `headprune compress` run (its compress_report.json)")
    add_output_args(parser)


def compress_rows(path: str) -> dict:
    """The kept models of a compress report (`compress_report.json`): fraction of heads removed and validation
    quality per accepted step, with the run's dense validation value and final test values."""
    try:
        report = json.loads(open(path, encoding="utf-8").read())
        total, rows = int(report["heads_total"]), report["trajectory"]
        kept = [{"fraction": r["heads_removed"] / total, "heads_kept": total - r["heads_removed"], "val": r["val"],
                 "phase": r["phase"], "step": r["step"]} for r in rows if r["accepted"]]
    except FileNotFoundError:
        raise UserError(f"no such compress report: {path}", option="compress_report") from None
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a compress report (compress_report.json of `headprune compress`): {exc}",
                        option="compress_report") from None
    return {"path": path, "kept": kept, "dense_val": report.get("dense_val_acc"), "judged_on":
            report.get("examples", {}).get("judge"), "test": report.get("compressed_test_acc"),
            "dense_test": report.get("dense_test_acc")}


def run(args: argparse.Namespace) -> dict:
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise UserError(f"fractions must be comma-separated numbers, got {args.fractions!r}", option="fractions") from None
    if args.stop_below is not None and not 0 <= args.stop_below <= 1:
        raise UserError(f"--stop-below is a fraction of the dense accuracy in [0, 1], got {args.stop_below}")
    if not 0 < args.step <= 1:
        raise UserError(f"the step must be a fraction in (0, 1], got {args.step}", option="step")
    compressed = compress_rows(args.compress_report) if args.compress_report else None
    bench = open_bench(args)
    with progress_bar(args, f"curve ({args.metric}, {args.mode})") as bar:
        found = bench.curves([args.metric], [args.mode], fractions, step=args.step, seeds=args.random_seeds,
                             stop_below=args.stop_below, progress=bar)
    baseline = found["baseline"]
    return {"command": "curves", "model": bench.workload.loaded.model_id, "metric": args.metric, "mode": args.mode,
            "curve": found["curves"].to_dict(orient="records"),
            "random": None if baseline is None else baseline.to_dict(orient="records"), "compress": compressed}


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
    if result.get("compress"):
        found = result["compress"]
        lines.append(f"compress ({found['path']}; validation, {found['judged_on']} examples, dense {found['dense_val']:.4f}; "
                     f"final test {found['test']:.4f} vs dense {found['dense_test']:.4f})")
        lines += [f"{row['fraction']:>8.0%} {row['heads_kept']:>6} {row['val']:>9.4f}  {row['phase']}"
                  for row in found["kept"]]
    return "\n".join(lines)


COMMAND = Command("curves", "accuracy vs fraction of heads removed, against random orders", build, run, render)
