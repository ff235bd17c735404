"""Background jobs: one long computation (scoring, curves, a search, a fine-tune) in a daemon thread, with a
lock-protected state (status, fraction, message, result, error) that a polling UI renders, and cancel."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..core.errors import UserError
from ..core.log import get_logger, log_internal_error
from ..core.progress import eta_text

log = get_logger(__name__)


class JobCancelled(Exception):
    """Raised inside a job's `progress` callback after `Job.cancel()`, to stop engines that only report progress."""


class Job:
    """Runs `fn(progress=..., should_stop=...)` in a daemon thread; its state is read with `snapshot()`.

    States: "idle" → "running" → "done" | "failed" | "cancelled". `progress(fraction, message)` records
    progress (and raises `JobCancelled` once cancelled); `should_stop()` lets a loop stop cleanly and return a
    partial result. Every state change happens under one lock, so a polling UI thread sees a consistent state.
    """

    def __init__(self, name: str = "job"):
        self.name = name
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = dict(status="idle", fraction=0.0, message="", result=None, error=None,
                                           started=None, finished=None)

    def start(self, fn: Callable[..., Any], *, pass_should_stop: bool = True) -> None:
        """Start `fn` in the background; UserError if this job is already running."""
        with self._lock:
            if self._state["status"] == "running":
                raise UserError(f"{self.name} is already running; wait for it or cancel it")
            self._cancel.clear()
            self._state.update(status="running", fraction=0.0, message="starting", result=None, error=None,
                               started=time.monotonic(), finished=None)
        kwargs = {"progress": self.progress}
        if pass_should_stop:
            kwargs["should_stop"] = self.should_stop
        self._thread = threading.Thread(target=self._run, args=(fn, kwargs), name=f"headprune-{self.name}", daemon=True)
        self._thread.start()

    def _run(self, fn, kwargs) -> None:
        try:
            result = fn(**kwargs)
        except JobCancelled:
            self._finish(status="cancelled", message="cancelled")
        except UserError as exc:  # bad input: the reason, as it is
            self._finish(status="failed", error=" ".join(str(exc).split())[:500])
        except Exception as exc:  # a bug: said so, with the traceback in a log file; the UI stays usable
            path = log_internal_error(exc, f"background job {self.name}")
            log.error("job %s failed: %s (traceback in %s)", self.name, exc, path)
            self._finish(status="failed", error=f"internal error (this is a bug): {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]} — traceback in {path}")
        else:
            status = "cancelled" if self._cancel.is_set() else "done"
            self._finish(status=status, result=result, fraction=1.0 if status == "done" else None)

    def _finish(self, *, status: str, result: Any = None, error: str | None = None, fraction: float | None = None,
                message: str | None = None) -> None:
        with self._lock:
            self._state.update(status=status, result=result, error=error, finished=time.monotonic())
            if fraction is not None:
                self._state["fraction"] = fraction
            if message is not None:
                self._state["message"] = message

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress in [0, 1]; raises `JobCancelled` after `cancel()`."""
        with self._lock:
            self._state["fraction"] = min(1.0, max(0.0, float(fraction)))
            self._state["message"] = str(message)
        if self._cancel.is_set():
            raise JobCancelled()

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop (at its next progress report or should_stop check)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the job's thread ends (tests, CLI); returns the final snapshot."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> dict:
        """A copy of the state plus `elapsed` seconds and an `eta` text; safe from any thread."""
        with self._lock:
            state = dict(self._state)
        if state["started"] is not None:
            end = state["finished"] if state["finished"] is not None else time.monotonic()
            state["elapsed"] = end - state["started"]
        else:
            state["elapsed"] = 0.0
        state["eta"] = eta_text(state["fraction"], state["elapsed"]) if state["status"] == "running" else ""
        state["cancelling"] = self._cancel.is_set() and state["status"] == "running"
        return state
