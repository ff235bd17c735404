"""The tweets data set (headprune.sources.tweets): splits deterministic, disjoint and balanced; seeded samples."""
from __future__ import annotations

import pytest

from headprune.sources.tweets import TWEET_LABELS, load_tweets


def test_tweet_splits_are_deterministic_disjoint_and_balanced():
    splits = {name: load_tweets(name) for name in ("train", "validation", "test")}
    sizes = {name: len(df) for name, df in splits.items()}
    assert 37_000 < sum(sizes.values()) < 37_300  # de-duplicated
    assert 0.75 < sizes["train"] / sum(sizes.values()) < 0.85
    texts = {name: set(df["text"]) for name, df in splits.items()}
    assert len(texts["train"]) == sizes["train"]  # no duplicates inside a split
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    for df in splits.values():
        assert list(df.columns) == ["text", "label"]
        share = df["label"].value_counts(normalize=True)
        assert 0.38 < share[0] < 0.48 and 0.34 < share[1] < 0.44 and 0.14 < share[2] < 0.22
    assert load_tweets("test").equals(splits["test"])
    assert set(load_tweets("val")["text"]) == texts["validation"]
    assert set(load_tweets("dev")["text"]) == texts["validation"]
    assert TWEET_LABELS == ["negative", "neutral", "positive"]


def test_tweet_limit_is_a_seeded_shuffle_not_the_first_rows():
    a = load_tweets("test", limit=60, seed=0)
    assert len(a) == 60 and a["label"].nunique() == 3  # the file is sorted by label
    assert a.equals(load_tweets("test", limit=60, seed=0))
    assert not a.equals(load_tweets("test", limit=60, seed=1))
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        load_tweets("holdout")
    with pytest.raises(ValueError, match="positive whole number"):
        load_tweets("test", limit=0)
