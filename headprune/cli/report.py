"""`headprune report`: one self-contained HTML file about a mask (opens offline in any browser)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..model.schema import read_scores
from ..workbench.report import write_report
from .common import (
    Command,
    add_model_args,
    add_output_args,
    add_overwrite_arg,
    open_bench,
    read_keep,
)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--mask", required=True, metavar="MASK.json", help="the mask to report on")
    parser.add_argument("--scores", action="append", default=[], metavar="SCORES.json",
                        help="importance scores to draw (from `headprune score --out`; repeat for several metrics)")
    parser.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file to write")
    add_overwrite_arg(parser)
    add_output_args(parser)


def outputs(args: argparse.Namespace) -> list:
    return [(args.out, "report", "out")]


def run(args: argparse.Namespace) -> dict:
    bench = open_bench(args)
    keep = read_keep(args.mask, bench)
    for path in args.scores:
        bench.adopt_scores(read_scores(path, bench.model, model_id=bench.workload.loaded.model_id))
    text = bench.report(keep, mask_file=Path(args.mask).name, out=Path(args.out).name)
    path = write_report(args.out, text)
    changes = bench.what_changed(None, keep)
    dense, after = bench.dense, bench.exact(keep)
    return {"command": "report", "out": str(path), "bytes": len(text.encode("utf-8")), "model": bench.workload.loaded.model_id,
            "heads_kept": int(keep.sum()), "heads_total": int(keep.numel()), "task": dense.task,
            "dense": dense.to_dict(), "after": after.to_dict(), "fixed": len(changes.fixed), "broken": len(changes.broken)}


def render(result: dict) -> str:
    dense, after = result["dense"], result["after"]
    line = (f"wrote {result['out']} ({result['bytes'] / 1e6:.1f} MB): {result['heads_kept']} of {result['heads_total']} "
            f"heads kept; accuracy {dense['accuracy']:.4f} → {after['accuracy']:.4f}, loss {dense['loss']:.4f} → "
            f"{after['loss']:.4f}")
    if result["task"] == "classification":
        line += f"; {result['fixed']} examples fixed, {result['broken']} broken"
    return line


COMMAND = Command("report", "write a self-contained HTML report of a mask (offline, interactive figures)", build, run,
                  render, outputs)
