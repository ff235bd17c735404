"""Split names (train / validation / test and their aliases: val, dev, ...) and sample sizes, one definition
for every source."""
from __future__ import annotations

import numbers

from ..core.errors import UserError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}


def normalise_split(split: str) -> str:
    """Map a split name or alias ("val", "dev") onto train / validation / test."""
    key = str(split).strip().lower()
    if key not in SPLIT_ALIASES:
        raise UserError(f"unknown split {split!r}: use train, validation (val, dev) or test", option="split")
    return SPLIT_ALIASES[key]


def split_key(name: str) -> str:
    """The split a name stands for, whatever its case or alias ("Dev", "val" → "validation"); a name that is no
    known alias stays itself, lower-cased."""
    key = str(name).strip().lower()
    return SPLIT_ALIASES.get(key, key)


def pick_split(available: list[str], split: str, origin: str) -> str:
    """The available split matching `split` or one of its aliases."""
    wanted, canonical = str(split).strip().lower(), split_key(split)
    for name in available:
        if name.lower() == wanted:
            return name
    for name in available:
        if split_key(name) == canonical:
            return name
    raise UserError(f"{origin} has no split {split!r}; splits found: {', '.join(available)}", option="split")


def check_limit(limit) -> int:
    """A sample size: a whole number ≥ 1."""
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise UserError(f"limit must be a positive whole number, got {limit!r}", option="limit")
    return int(limit)
