"""What every sub-command shares: the `Command` record, the model/data/output options, argument types that
refuse nonsense at parse time, progress bars, opening a Workbench, reading masks, and output-path checks."""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable

from ..core.distributed import is_main
from ..core.log import get_logger
from ..core.outputs import check_output
from ..core.progress import TqdmProgress
from ..model.schema import read_mask
from ..presets import PRESETS
from ..workbench import Workbench, open_workload

log = get_logger(__name__)


@dataclass(frozen=True)
class Command:
    """A sub-command: `build(parser)` adds its options, `run(args) -> dict` calls the engine, `render(result)`
    is the readable summary (else JSON), `outputs(args)` lists (path, kind, overwrite) checked before any work."""

    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    render: Callable[[dict], str] | None = None
    outputs: Callable[[argparse.Namespace], list] | None = None


# ------------------------------------------------------------------------------------------ argument types
def _whole_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number ≥ {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A whole number ≥ 1."""
    return _whole_at_least(text, 1)


def whole(text: str) -> int:
    """A whole number ≥ 0."""
    return _whole_at_least(text, 0)


def finite(text: str) -> float:
    """A finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


# ------------------------------------------------------------------------------------------ shared options
def add_model_args(parser: argparse.ArgumentParser, *, default_split: str = "test") -> None:
    """The options every model + data command shares."""
    group = parser.add_argument_group("model and data")
    group.add_argument("--model", required=True, metavar="PRESET|HUB_ID|DIR",
                       help=f"a preset ({', '.join(PRESETS)}), a Hub id, or a folder saved with save_pretrained / save_pruned")
    group.add_argument("--data", default="tweets", metavar="tweets|HUB_NAME|FILE",
                       help="'tweets' (built in), a Hub dataset name, or a CSV/TSV/JSON/JSONL/Parquet file (default: tweets)")
    group.add_argument("--split", default=None,
                       help=f"train, validation (val, dev) or test (default: {default_split}; a plain file is one "
                            "split: leave this out, or give the file a 'split' column)")
    group.add_argument("--config-name", default=None, help="the Hub dataset's configuration (e.g. sst2 for glue)")
    group.add_argument("--limit", type=positive_int, default=None, metavar="N",
                       help="use a seeded random sample of N examples")
    group.add_argument("--seed", type=int, default=0, help="seed for sampling and masking (default: 0)")
    group.add_argument("--batch-size", type=positive_int, default=None,
                       help="examples per batch (default: 32; 8 for causal language models)")
    group.add_argument("--max-length", type=positive_int, default=128, help="tokens per example (default: 128)")
    group.add_argument("--text-column", default=None, help="the data's text column (guessed when omitted)")
    group.add_argument("--text-pair-column", default=None, help="the second text of a pair task, if any")
    group.add_argument("--label-column", default=None, help="the data's label column (guessed when omitted)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow a model that ships its own code to run it (only for models you trust)")
    parser.set_defaults(default_split=default_split)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a summary")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output, if it is a previous headprune output of the same kind")


def progress_bar(args: argparse.Namespace, description: str) -> TqdmProgress:
    """A `progress(fraction, message)` callback drawing on stderr (silent with --quiet); close it after use."""
    return TqdmProgress(description, disable=bool(getattr(args, "quiet", False)) or not is_main())


def data_options(args: argparse.Namespace) -> dict:
    return {"text_column": args.text_column, "text_pair_column": args.text_pair_column,
            "label_column": args.label_column, "config_name": args.config_name}


def open_bench(args: argparse.Namespace, *, split: str | None = None, limit: int | None = None) -> Workbench:
    """A Workbench over `--model` and one split of `--data` (default: `--split`, `--limit`)."""
    with progress_bar(args, f"loading {args.model}") as bar:
        workload = open_workload(args.model, args.data, split=split if split is not None else args.split,
                                 default_split=args.default_split, limit=limit if limit is not None else args.limit,
                                 batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                                 data_options={k: v for k, v in data_options(args).items() if v is not None},
                                 trust_remote_code=args.trust_remote_code, progress=bar)
    return Workbench(workload)


def calibration_batches(args: argparse.Namespace, bench) -> tuple[list | None, str | None]:
    """Calibration batches for --recover: --calib-split, else train where the data has it, else the judging data."""
    if args.recover is None:
        return None, None
    split = args.calib_split or ("train" if bench.workload.split is not None else None)
    if split is None:
        log.warning("the data is one file without splits: least squares calibrates on the same examples it is "
                    "judged on (optimistic); give the file a 'split' column to keep them apart")
        return bench.workload.batches, bench.workload.split
    return bench.split_batches(split, limit=args.limit)[1], split


def read_keep(path: str, bench: Workbench):
    """The keep mask in a mask file written by headprune, for the bench's model."""
    return read_mask(path, bench.model, model_id=bench.workload.loaded.model_id)


def beside_out(args: argparse.Namespace, given: str | None, suffix: str) -> str:
    """`given`, else a folder beside the output: ``OUT.suffix``."""
    return given or f"{os.path.normpath(args.out)}.{suffix}"


def resumable_outputs(args: argparse.Namespace, state: str, option: str) -> list:
    """The outputs of a resumable command: the model at --out and, unless --resume, its state folder `state`
    (given by `option`), both new (see `check_outputs`)."""
    return [(args.out, "pruned-model", "out"), *([] if args.resume else [(state, "checkpoints", option)])]


def check_outputs(command: Command, args: argparse.Namespace) -> None:
    """Validate every output path of `command` before any loading, scoring or training starts: never the
    model folder, data file or mask given as input (nor a folder holding one), and an existing path only when
    it is headprune's own output of that kind and --overwrite is given."""
    if command.outputs is None:
        return
    outputs = [(path, kind, option) for path, kind, option in command.outputs(args) if path]
    inputs = [getattr(args, name, None) for name in ("model", "data", "mask")]
    for i, (path, kind, option) in enumerate(outputs):
        protect = inputs + [other for j, (other, _, _) in enumerate(outputs) if j != i]
        check_output(path, kind, overwrite=bool(getattr(args, "overwrite", False)), protect=protect, option=option)


def interruptible(run):
    """Run `run(should_stop)` with the first Ctrl-C asking it to stop after the current step (a second one
    aborts at once)."""
    stop = threading.Event()

    def on_interrupt(signum, frame):  # first Ctrl-C: checkpoint after this step and stop; second: abort now
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nheadprune: stopping after this step and saving what is done (Ctrl-C again to abort)", file=sys.stderr)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    try:
        return run(stop.is_set)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
