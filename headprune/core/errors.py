"""The two kinds of failure, kept apart everywhere.

* `UserError` (a `ValueError`): the input is wrong — a missing file, a bad option, a mask for another model,
  an output path that exists. The message says what is wrong and what to do, in words that do not assume the
  command line (the CLI adds the flag, from `option`; the dashboard shows the message in `st.error`).
  The CLI exits 2.
* Anything else is a bug in headprune or a library under it: the CLI exits 1, says "this is a bug" and writes
  the traceback to a log file. `InternalError` marks an invariant that headprune itself checks.
"""
from __future__ import annotations


class HeadpruneError(Exception):
    """Base class of headprune's own exceptions."""


class UserError(HeadpruneError, ValueError):
    """Bad input: the user can fix it. `option` names the engine argument at fault (e.g. "label_column"),
    so front ends can point at their own control for it (`--label-column`, a sidebar box)."""

    def __init__(self, message: str, *, option: str | None = None):
        super().__init__(message)
        self.option = option


class UnsupportedModelError(UserError):
    """The model's architecture has no headprune adapter."""


class OutputExistsError(UserError):
    """An output path exists and may not (or cannot) be replaced."""


class InternalError(HeadpruneError, RuntimeError):
    """An invariant headprune checks itself was broken: a bug, never the user's input."""
