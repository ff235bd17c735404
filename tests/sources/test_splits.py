"""sources.splits: split names and aliases onto train / validation / test, picking a source's split, sample sizes."""
from __future__ import annotations

import pytest

from headprune.core.errors import UserError
from headprune.sources.splits import (
    SPLIT_ALIASES,
    SPLITS,
    check_limit,
    normalise_split,
    pick_split,
)


def test_every_alias_names_one_of_the_three_splits():
    assert set(SPLIT_ALIASES.values()) == set(SPLITS)
    assert all(SPLIT_ALIASES[s] == s for s in SPLITS)
    for alias, split in SPLIT_ALIASES.items():
        assert normalise_split(alias) == split and normalise_split(f" {alias.upper()} ") == split
    with pytest.raises(UserError, match=r"unknown split 'holdout': use train, validation \(val, dev\) or test") as caught:
        normalise_split("holdout")
    assert caught.value.option == "split"


def test_pick_split_prefers_the_exact_name_then_an_alias():
    assert pick_split(["train", "dev", "test"], "validation", "glue") == "dev"
    assert pick_split(["train", "Validation"], "val", "x") == "Validation"  # keeps the source's spelling
    assert pick_split(["validation", "val"], "val", "x") == "val"  # an exact match wins over an alias
    assert pick_split(["training", "test"], " TRAIN ", "x") == "training"
    assert pick_split(["train", "extra"], "extra", "x") == "extra"  # names that are no alias match exactly
    with pytest.raises(UserError, match=r"data.csv has no split 'test'; splits found: train, validation") as caught:
        pick_split(["train", "validation"], "test", "data.csv")
    assert caught.value.option == "split"


@pytest.mark.parametrize("bad", [0, -3, 2.0, "10", True, None])
def test_check_limit_wants_a_whole_number_of_at_least_one(bad):
    assert check_limit(1) == 1 and check_limit(500) == 500
    with pytest.raises(UserError, match=f"limit must be a positive whole number, got {bad!r}") as caught:
        check_limit(bad)
    assert caught.value.option == "limit"
