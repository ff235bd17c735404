"""Labelled text data: the built-in tweets, local files (CSV/TSV/JSON/JSONL/Parquet) and Hub datasets.

Every loader returns a `pandas.DataFrame` with the columns `text`, optional `text_pair` and optional `label`
(integer ids). Bad input raises `UserError` with a one-line reason that says what to do next.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from ..core.errors import UserError
from .columns import to_standard
from .files import FILE_TYPES, HUB_NAME, file_has_split_column, read_hub, read_local
from .splits import check_limit
from .tweets import TWEET_LABELS, load_tweets


def load_data(
    spec: str,
    *,
    split: str | None = None,
    default_split: str = "test",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    config_name: str | None = None,
    label2id: dict[str, int] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Load `spec` = "tweets", a local CSV/TSV/JSON/JSONL/Parquet file (or a `save_to_disk` folder), or a Hub dataset.

    `split`: train / validation / test (or an alias); None = `default_split` for sources with splits (the
    tweets, Hub datasets, saved dataset dicts, files with a `split` column), every row of a plain file. A plain
    file is one split; asking it for a split it does not have is an error. Returns columns `text`, optional `text_pair`, optional `label` (int ids; string labels are mapped
    through `label2id`, the model's). Columns are guessed when not given. With `limit`, a seeded random
    sample of that many rows is taken.
    """
    spec = str(spec).strip()
    if not spec:
        raise UserError("no data given: name the built-in tweets, a file (CSV, JSON, JSONL, Parquet) or a Hub dataset", option="data")
    if spec.lower() == "tweets":
        df = load_tweets(split or default_split, limit=limit, seed=seed)
        if label2id:
            df["label"] = _remap_tweet_labels(df["label"], label2id)
        return df
    path = Path(os.path.expanduser(spec))
    if path.exists():
        raw = read_local(path, split, default_split)
        origin = str(path)
    elif HUB_NAME.match(spec) and path.suffix.lower() not in FILE_TYPES:
        raw = read_hub(spec, config_name, split or default_split)
        origin = spec
    else:
        raise UserError(f"no such file: {spec}", option="data")
    if len(raw) == 0:
        raise UserError(f"empty data: {origin} has no rows")
    df = to_standard(raw, origin, text_column, text_pair_column, label_column, label2id)
    if limit is not None and check_limit(limit) < len(df):
        df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    return df


def _remap_tweet_labels(labels: pd.Series, label2id: dict[str, int]) -> pd.Series:
    """Tweet ids follow TWEET_LABELS; map them onto a model whose label names are negative/neutral/positive."""
    lower = {str(k).lower(): v for k, v in label2id.items()}
    if all(name in lower for name in TWEET_LABELS):
        return labels.map({i: int(lower[name]) for i, name in enumerate(TWEET_LABELS)}).astype("int64")
    if set(lower) == {f"label_{i}" for i in range(len(lower))} and len(lower) == len(TWEET_LABELS):
        return labels  # unnamed labels: keep the tweets' ids 0/1/2
    raise UserError(
        f"the model's labels ({', '.join(map(str, label2id))}) do not match the tweets' labels "
        f"({', '.join(TWEET_LABELS)}): use data labelled for this model"
    )



def data_fingerprint(df: pd.DataFrame) -> str:
    """sha256 of a data frame's content (column names and values, in order): a key for caches."""
    h = hashlib.sha256()
    for column in df.columns:
        h.update(b"\x1ecol\x1f" + str(column).encode("utf-8") + b"\x1f")
        values = df[column]
        h.update(str(values.dtype).encode() + b"\x1f")
        h.update("\x1f".join(map(str, values.tolist())).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def has_splits(spec: str, *, config_name: str | None = None) -> bool:
    """True when `spec` names a source with train / validation / test splits (a plain file has none)."""
    spec = str(spec).strip()
    if spec.lower() == "tweets":
        return True
    path = Path(os.path.expanduser(spec))
    if not path.exists():
        return True  # a Hub dataset
    return path.is_dir() or file_has_split_column(path)
