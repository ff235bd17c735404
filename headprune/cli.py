"""The `headprune` command line: thin sub-commands over the engine's functions.

Each sub-command is a `Command` in `COMMANDS`: a parser builder (adds its options), a thin `run(args) -> dict`
that calls one library function, and an optional `render(result) -> str` for the readable summary.
`--json` prints exactly one JSON object on stdout; progress bars and messages go to stderr.
Exit codes: 0 ok; 2 bad usage or bad input (one line `headprune: error: <reason>` on stderr); 1 any other failure
(set HEADPRUNE_DEBUG=1 for the traceback); 130 interrupted.

Add a sub-command:

    def build_score(parser): add_model_args(parser); parser.add_argument("--metric", ...)
    def run_score(args): loaded, df, batches = load_workload(args); return score_heads(...)
    register(Command("score", "rank heads by importance", build_score, run_score))
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_BATCH_SIZE = {"classification": 32, "masked-lm": 32, "causal-lm": 8}


@dataclass
class Command:
    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    render: Callable[[dict], str] | None = None


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a sub-command (a later registration under the same name replaces the earlier one)."""
    COMMANDS[command.name] = command
    return command


# ----------------------------------------------------------------------------------- shared options
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {value}")
    return value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options every model + data command shares."""
    from .presets import PRESETS

    group = parser.add_argument_group("model and data")
    group.add_argument("--model", required=True, metavar="PRESET|HUB_ID|DIR",
                       help=f"a preset ({', '.join(PRESETS)}), a Hub id, or a folder saved with save_pretrained / save_pruned")
    group.add_argument("--data", default="tweets", metavar="tweets|HUB_NAME|FILE",
                       help="'tweets' (built in), a Hub dataset name, or a CSV/TSV/JSON/JSONL/Parquet file (default: tweets)")
    group.add_argument("--split", default="test", help="train, validation (val, dev) or test (default: test)")
    group.add_argument("--config-name", default=None, help="the Hub dataset's configuration (e.g. sst2 for glue)")
    group.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                       help="evaluate a seeded random sample of N examples")
    group.add_argument("--seed", type=int, default=0, help="seed for sampling and masking (default: 0)")
    group.add_argument("--batch-size", type=_positive_int, default=None,
                       help="examples per batch (default: 32; 8 for causal language models)")
    group.add_argument("--max-length", type=_positive_int, default=128, help="tokens per example (default: 128)")
    group.add_argument("--text-column", default=None, help="the data's text column (guessed when omitted)")
    group.add_argument("--text-pair-column", default=None, help="the second text of a pair task, if any")
    group.add_argument("--label-column", default=None, help="the data's label column (guessed when omitted)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow a model that ships its own code to run it (only for models you trust)")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a summary")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def progress_bar(args: argparse.Namespace, description: str):
    """A `progress(fraction, message)` callback drawing on stderr (silent with --quiet); close it after use."""
    from .train import TqdmProgress

    return TqdmProgress(description, disable=bool(getattr(args, "quiet", False)))


def load_workload(args: argparse.Namespace):
    """(LoadedModel, data frame, batches) from the shared model/data options."""
    from .batches import make_batches
    from .data import load_data
    from .models import load_model

    with progress_bar(args, f"loading {args.model}") as bar:
        loaded = load_model(args.model, trust_remote_code=args.trust_remote_code, progress=bar)
    df = load_data(
        args.data, split=args.split, text_column=args.text_column, text_pair_column=args.text_pair_column,
        label_column=args.label_column, config_name=args.config_name,
        label2id=loaded.label2id if loaded.task == "classification" else None, limit=args.limit, seed=args.seed,
    )
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE.get(loaded.task, 32)
    batches = make_batches(loaded.tokenizer, df, loaded.task, batch_size=batch_size, max_length=args.max_length,
                           seed=args.seed)
    return loaded, df, batches


def read_keep(path: str, model):
    """A keep-mask from a JSON file written by headprune (lazy import of headprune.mask)."""
    if not os.path.isfile(path):
        raise ValueError(f"no such mask file: {path}")
    from .mask import read_mask

    return read_mask(path, model)


# ------------------------------------------------------------------------------------------- eval
def build_eval(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--mask", default=None, metavar="MASK.json", help="evaluate with only the heads this mask keeps")
    parser.add_argument("--zero-shot", action="store_true",
                        help="causal LMs: also report zero-shot sentiment accuracy from label-word logits")
    add_output_args(parser)


def run_eval(args: argparse.Namespace) -> dict:
    from .evaluate import evaluate, zero_shot_sentiment

    loaded, df, batches = load_workload(args)
    keep = read_keep(args.mask, loaded.model) if args.mask else None
    with progress_bar(args, "evaluating") as bar:
        metrics = evaluate(loaded.model, batches, keep, task=loaded.task, progress=bar)
    result = {"command": "eval", "model": loaded.model_id, "source": loaded.source, "task": loaded.task,
              "data": args.data, "split": args.split, **metrics}
    if keep is not None:
        result["mask"] = {"path": args.mask, "heads_kept": int(keep.sum()), "heads_total": int(keep.numel())}
    if args.zero_shot:
        if loaded.task != "causal-lm":
            raise ValueError("--zero-shot needs a causal language model")
        names = df.attrs.get("label_names")
        if "label" not in df.columns or not names:
            raise ValueError("--zero-shot needs data with named labels (e.g. --data tweets)")
        with progress_bar(args, "zero-shot") as bar:
            result["zero_shot"] = zero_shot_sentiment(loaded, df, labels=names, keep=keep, progress=bar)
    return result


def render_eval(result: dict) -> str:
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
        lines.append(f"zero-shot sentiment accuracy  {zs['accuracy']:.4f} "
                     f"(predicted {', '.join(f'{k} {v}' for k, v in zs['predicted'].items())})")
    lines.append(f"seconds   {result['seconds']:.1f}")
    return "\n".join(lines)


register(Command("eval", "evaluate a model on labelled data (optionally under a head mask)", build_eval, run_eval,
                 render_eval))


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headprune", description="Find, test and remove redundant attention heads in Transformer models.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show library warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        command.build(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # tensors, numpy
        return _jsonable(value.tolist())
    return value


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Console entry point: `headprune COMMAND ...`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = COMMANDS[args.command]
    if not args.verbose:
        with contextlib.suppress(ImportError):
            import transformers

            transformers.logging.set_verbosity_error()
    stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stray prints never corrupt --json output
            result = command.run(args)
    except KeyboardInterrupt:
        print("headprune: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        if os.environ.get("HEADPRUNE_DEBUG"):
            traceback.print_exc()
        print(f"headprune: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("HEADPRUNE_DEBUG"):
            traceback.print_exc()
        print(f"headprune: error: {type(exc).__name__}: {_error_line(exc)} (HEADPRUNE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "json", False):
        stdout.write(json.dumps(_jsonable(result)) + "\n")
    elif command.render is not None:
        stdout.write(command.render(result) + "\n")
    else:
        stdout.write(json.dumps(_jsonable(result), indent=2) + "\n")
    stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
