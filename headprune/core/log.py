"""Logging: every module logs to `logging.getLogger("headprune.<module>")`; front ends decide where it goes.

`log_internal_error` writes a traceback to a fresh file under the cache folder and returns its path, for the
"this is a bug" path of the CLI and the dashboard.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path

from .paths import cache_dir

LOGGER_NAME = "headprune"


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (pass `__name__`)."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send headprune's log records to stderr as `headprune: message` lines (once per process)."""
    root = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_headprune", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("headprune: %(message)s"))
        handler._headprune = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def log_internal_error(exc: BaseException, context: str = "") -> Path:
    """Write `exc`'s traceback (and `context`) to `<cache>/logs/error-<time>-<pid>.log`; return the path."""
    folder = cache_dir("logs")
    path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    path.write_text((f"{context}\n\n" if context else "") + text, encoding="utf-8")
    return path
