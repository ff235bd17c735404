"""Progress (headprune.core.progress) that is about linear in time: parts sized by their expected cost; times
as text."""
from __future__ import annotations

from headprune.core.progress import eta_text, format_seconds, weighted


def test_weighted_parts_follow_their_costs():
    seen = []
    first, second, empty, third = weighted(lambda f, m="": seen.append(round(f, 6)), [1, 3, 0, 4])
    first(1.0)
    second(0.5)
    empty(1.0)
    third(1.0)
    assert seen == [0.125, 0.3125, 0.5, 1.0]
    assert weighted(None, [1, 2]) == [None, None]


def test_eta_and_seconds_texts():
    assert eta_text(0.0, 10) == "" and eta_text(0.5, 1.0) == ""
    assert eta_text(0.25, 30) == "about 1 min 30 s left (30 s so far)"
    assert format_seconds(3700) == "1 h 1 min"
