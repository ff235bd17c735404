"""`headprune bench NAME`: run a benchmark script from the source checkout's bench/ folder."""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path

from ..core.errors import UserError
from .common import Command, add_output_args


def bench_dir() -> Path:
    """The source checkout's bench/ folder (benchmarks are scripts beside the package, not installed with it)."""
    return Path(__file__).resolve().parents[2] / "bench"


def build(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="prune-speed, score-speed, whatif-speed, recovery, ... (a script in bench/)")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="options passed to the script (e.g. --out FILE)")
    add_output_args(parser)


def run(args: argparse.Namespace) -> dict:
    folder = bench_dir()
    available = sorted(p.stem.replace("_", "-") for p in folder.glob("*.py")) if folder.is_dir() else []
    script = folder / f"{args.name.replace('-', '_')}.py"
    if not script.is_file():
        if not folder.is_dir():
            raise UserError(f"no bench/ folder beside the package ({folder}); run from a source checkout")
        raise UserError(f"no benchmark {args.name!r}; available: {', '.join(available) or 'none'}")
    rest = [a for a in args.bench_args if a != "--"]
    done = subprocess.run([sys.executable, str(script), *rest], stdout=sys.stderr if args.json else None)
    if done.returncode != 0:
        raise UserError(f"bench/{script.name} failed with exit code {done.returncode} (its output is above)")
    result = {"command": "bench", "name": args.name, "script": str(script), "returncode": done.returncode}
    if "--out" in rest and rest.index("--out") + 1 < len(rest):
        out = rest[rest.index("--out") + 1]
        result["out"] = out
        with contextlib.suppress(OSError, ValueError):
            result["result"] = json.loads(Path(out).read_text(encoding="utf-8"))
    return result


def render(result: dict) -> str:
    return f"benchmark {result['name']} finished" + (f"; results in {result['out']}" if result.get("out") else "")


COMMAND = Command("bench", "run a benchmark script from bench/ (prints its table, writes its JSON)", build, run, render)
