"""Logging: every module logs to `logging.getLogger("headprune.<module>")`; front ends decide where it goes.

`log_internal_error` writes a traceback to a fresh file under the cache folder and returns its path, for the
"this is a bug" path of the CLI and the dashboard.
"""
from __future__ import annotations

import itertools
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from .paths import cache_dir

LOGGER_NAME = "headprune"


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (pass `__name__`)."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stderr` is when a record is written, not the one at creation (so a
    later redirection of stderr, e.g. by a caller capturing it, still receives the records)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send headprune's log records to stderr as `headprune: message` lines (once per process)."""
    root = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_headprune", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("headprune: %(message)s"))
        handler._headprune = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def log_internal_error(exc: BaseException, context: str = "") -> Path:
    """Write `exc`'s traceback (and `context`) to a new file `<cache>/logs/error-<time>-<pid>[-n].log` (never
    one an earlier error wrote, even within the same second); return its path."""
    folder = cache_dir("logs")
    stem = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for n in itertools.count():
        path = folder / (f"{stem}.log" if n == 0 else f"{stem}-{n}.log")
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write((f"{context}\n\n" if context else "") + text)
            return path
        except FileExistsError:
            continue
