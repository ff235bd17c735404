"""One progress contract for every long computation: `progress(fraction, message)`.

Engine functions take `progress: Progress | None`; `report` calls it when given, `sub` maps a part of the work
onto a sub-range of the caller's bar (so nested work never computes ranges by hand), `parts` splits a bar
into equal consecutive parts, `weighted` into parts sized by their expected cost (so an ETA holds).
`TqdmProgress` draws one on stderr (CLI); the dashboard's jobs record one; `eta_text` is the one
remaining-time text (engines report what they do, never their own estimate).
"""
from __future__ import annotations

import sys
from typing import Protocol, Sequence


class Progress(Protocol):
    def __call__(self, fraction: float, message: str = "") -> None:
        """`fraction` of the work is done (0..1); `message` says what is happening."""


def report(progress: Progress | None, fraction: float, message: str = "") -> None:
    """Call `progress` (if any) with `fraction` clipped to [0, 1]."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def sub(progress: Progress | None, start: float, end: float, prefix: str = "") -> Progress | None:
    """A progress callback whose 0..1 maps onto `start`..`end` of `progress` (None stays None); `prefix`
    goes in front of every message."""
    if progress is None:
        return None

    def inner(fraction: float, message: str = "") -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        progress(start + (end - start) * fraction, f"{prefix}{message}" if prefix else message)

    return inner


def parts(progress: Progress | None, count: int) -> list[Progress | None]:
    """`count` consecutive equal sub-ranges of `progress`."""
    count = max(1, int(count))
    return [sub(progress, i / count, (i + 1) / count) for i in range(count)]


def weighted(progress: Progress | None, weights: Sequence[float]) -> list[Progress | None]:
    """Consecutive sub-ranges of `progress` proportional to `weights` (the parts' expected costs, in any one
    unit), so the fraction grows about linearly in time and a remaining-time estimate from it holds."""
    costs = [max(0.0, float(w)) for w in weights]
    total = sum(costs) or 1.0
    out, start = [], 0.0
    for cost in costs:
        out.append(sub(progress, start, start + cost / total))
        start += cost / total
    return out


def format_seconds(seconds: float) -> str:
    """12 -> '12 s', 95 -> '1 min 35 s', 3700 -> '1 h 2 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def eta_text(fraction: float, elapsed: float) -> str:
    """An honest remaining-time text from progress so far: '' until 2% and 2 s give a basis for it."""
    if fraction < 0.02 or elapsed < 2.0 or fraction >= 1.0:
        return ""
    remaining = elapsed * (1.0 - fraction) / fraction
    return f"about {format_seconds(remaining)} left ({format_seconds(elapsed)} so far)"


class TqdmProgress:
    """A `progress(fraction, message)` callback drawing a tqdm bar on stderr; use as a context manager."""

    def __init__(self, description: str, *, disable: bool = False):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1000, desc=description, file=sys.stderr, disable=disable, leave=True, smoothing=0,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self._done = 0

    def __call__(self, fraction: float, message: str = "") -> None:
        target = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if target > self._done:
            self._bar.update(target - self._done)
            self._done = target
        if message:
            self._bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
