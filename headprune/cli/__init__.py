"""The `headprune` command line: one module per sub-command, each an argument parser plus Workbench calls.

`--json` prints exactly one JSON object on stdout; progress bars and messages go to stderr.
Exit codes: 0 ok; 2 bad usage or bad input (one line `headprune: error: <what is wrong and what to do>`);
1 an internal error — a bug, said so, with the traceback written to a log file whose path is printed;
130 interrupted. Every output path is checked before any loading, scoring or training starts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys

from ..core.distributed import is_main
from ..core.errors import UserError
from ..core.log import log_internal_error, log_to_stderr
from ..core.records import jsonable
from . import (
    bench,
    compress,
    curves,
    evaluate,
    export_onnx,
    finetune,
    prune,
    report,
    roles,
    score,
)
from .common import Command, check_outputs

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMANDS: dict[str, Command] = {c.name: c for c in (evaluate.COMMAND, score.COMMAND, prune.COMMAND, export_onnx.COMMAND,
                                                    finetune.COMMAND, compress.COMMAND, roles.COMMAND, curves.COMMAND,
                                                    report.COMMAND, bench.COMMAND)}
FLAGS = {"max_drop": "--budget", "zero_shot": "--zero-shot", "trust_remote_code": "--trust-remote-code"}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, `headprune: error: <what> (see headprune COMMAND --help)`, exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"headprune: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="headprune", description="Find, test and remove redundant attention heads in Transformer models.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show library warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for command in COMMANDS.values():
        command.build(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def _flag(option: str | None, parser: argparse.ArgumentParser, command: str) -> str | None:
    """The command-line flag of an engine option name, if this command has it."""
    if not option:
        return None
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags = [f for f in (FLAGS.get(option), "--" + option.replace("_", "-")) if f]
    return next((f for f in flags if any(f in a.option_strings for a in sub._actions)), None)


def user_error_line(exc: UserError, flag: str | None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"headprune: error: {flag}: {text}" if flag and not text.startswith(flag) and flag not in text else \
        f"headprune: error: {text}"


def _quiet_libraries() -> None:
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _print(result: dict, command: Command, as_json: bool, stdout) -> None:
    if as_json:
        stdout.write(json.dumps(jsonable(result)) + "\n")
    elif command.render is not None:
        stdout.write(command.render(result) + "\n")
    else:
        stdout.write(json.dumps(jsonable(result), indent=2) + "\n")
    stdout.flush()


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
    log_to_stderr(logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        _quiet_libraries()
    stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stray prints never corrupt --json output
            check_outputs(command, args)
            result = command.run(args)
    except KeyboardInterrupt:
        print("headprune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as exc:
        print(user_error_line(exc, _flag(exc.option, parser, args.command)), file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path the user named cannot be read or written (permissions, disk full)
        if not exc.filename:
            raise
        print(f"headprune: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: a bug, said so
        path = log_internal_error(exc, f"headprune {' '.join(sys.argv[1:] if argv is None else argv)}")
        message = " ".join(str(exc).split())[:300]
        print(f"headprune: internal error (this is a bug): {type(exc).__name__}: {message}; the traceback is in "
              f"{path}", file=sys.stderr)
        return EXIT_FAILED
    if is_main():  # under torchrun / accelerate launch only rank 0 prints the result
        _print(result, command, getattr(args, "json", False), stdout)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
