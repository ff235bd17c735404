"""`headprune roles`: tag heads with their attention roles (positional, sink, broad, ...) and the evidence."""
from __future__ import annotations

import argparse

from .common import Command, add_model_args, add_output_args, open_bench, positive_int


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--max-examples", type=positive_int, default=64, help="examples to average over (default: 64)")
    add_output_args(parser)


def run(args: argparse.Namespace) -> dict:
    bench = open_bench(args)
    table = bench.roles(max_examples=args.max_examples)
    return {"command": "roles", "model": bench.workload.loaded.model_id, "roles": table.to_dict(orient="records")}


def render(result: dict) -> str:
    lines = [f"model  {result['model']}", f"{'layer':>5} {'head':>4}  {'role':<15} {'statistic':<28} value"]
    lines += [f"{r['layer']:>5} {r['head']:>4}  {r['role']:<15} {r['statistic']:<28} {r['value']:.3f}"
              for r in result["roles"]]
    return "\n".join(lines)


COMMAND = Command("roles", "tag heads with their attention roles (positional, sink, broad, ...)", build, run, render)
