"""The dashboard under streamlit.testing.v1.AppTest: where the app is, how long a run may take, and reading
what it shows."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 180  # torch imports and the first model load are slow on a shared 2-core machine


def no_exceptions(at):
    assert not at.exception, [e.value for e in at.exception]


def ok(at):
    """No exception and no error message."""
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def button(at, label):
    return next(b for b in at.button if b.label == label)
