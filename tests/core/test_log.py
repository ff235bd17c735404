"""core.log: module loggers under "headprune", one stderr handler at most, and internal-error log files."""
from __future__ import annotations

import logging
import types

import pytest

from headprune.core import log
from headprune.core.log import (
    LOGGER_NAME,
    get_logger,
    log_internal_error,
    log_to_stderr,
)


@pytest.fixture
def bare_root():
    """headprune's root logger without handlers (an earlier CLI test may have added one), restored after."""
    root = logging.getLogger(LOGGER_NAME)
    handlers, level = list(root.handlers), root.level
    root.handlers.clear()
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_module_loggers_live_under_headprune():
    root = logging.getLogger(LOGGER_NAME)
    assert get_logger("headprune.scoring.api").name == "headprune.scoring.api"
    assert get_logger("bench").name == "headprune.bench"
    assert get_logger("bench") is logging.getLogger("headprune.bench")
    assert get_logger("bench").parent is root


def test_log_to_stderr_adds_one_handler_and_formats_lines(bare_root, capsys):
    log_to_stderr(logging.WARNING)
    log_to_stderr(logging.INFO)  # a second call only changes the level
    assert len(bare_root.handlers) == 1 and bare_root.level == logging.INFO
    get_logger("unit").info("loaded %d rows", 3)
    get_logger("unit").debug("not shown")
    assert capsys.readouterr().err == "headprune: loaded 3 rows\n"
    log_to_stderr(logging.WARNING)
    get_logger("unit").info("now hidden")
    assert capsys.readouterr().err == ""


def _raise_here():
    raise KeyError("the missing key")


def test_internal_errors_go_to_a_log_file_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    try:
        _raise_here()
    except KeyError as exc:
        path = log_internal_error(exc, "headprune score --model x")
    assert path.parent == tmp_path / "cache" / "logs" and path.name.startswith("error-") and path.suffix == ".log"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("headprune score --model x\n\nTraceback (most recent call last):")
    assert "in _raise_here" in text and text.rstrip().endswith("KeyError: 'the missing key'")
    # without a context the file is the traceback alone
    assert log_internal_error(ValueError("no traceback")).read_text().strip() == "ValueError: no traceback"


def test_two_errors_in_the_same_second_get_two_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(log, "time", types.SimpleNamespace(strftime=lambda fmt: "20250101-120000"))  # one clock second
    first = log_internal_error(RuntimeError("first job failed"), "job a")
    second = log_internal_error(RuntimeError("second job failed"), "job b")
    assert first != second
    assert "first job failed" in first.read_text() and "second job failed" in second.read_text()
