"""Reading labelled text from local files (CSV/TSV/JSON/JSONL/Parquet, `save_to_disk` folders) and Hub datasets.

Readers return the raw table; `headprune.sources.columns` turns it into headprune's columns. A plain file is one
split, unless it has a `split` column (train / validation / test, or their aliases) to select rows by.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd

from ..core.errors import UserError
from .splits import pick_split, split_key

FILE_TYPES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".parquet": "parquet", ".pq": "parquet"}
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


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
        raise UserError(f"{path} is not a text file (expected UTF-8 or latin-1 text)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_local(path: Path, split: str | None, default_split: str = "test") -> pd.DataFrame:
    """The rows of `split` in a local file or `save_to_disk` folder (None: `default_split` where the source has
    splits, else every row of the file)."""
    if path.is_dir():
        return _read_saved_dataset(path, split or default_split)
    return select_split(_read_file(path), split, str(path), default_split)


def _read_file(path: Path) -> pd.DataFrame:
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise UserError(
            f"unsupported file type {path.suffix or '(none)'!r} for {path}: use .csv, .tsv, .json, .jsonl or .parquet"
        )
    if path.stat().st_size == 0:
        raise UserError(f"empty file: {path}")
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own types
            raise UserError(f"could not read {path} as Parquet: {_one_line(exc)}") from exc
    text = _read_text(path)
    if not text.strip():
        raise UserError(f"empty file: {path}")
    if kind in ("csv", "tsv"):
        try:
            return pd.read_csv(io.StringIO(text), sep="\t" if kind == "tsv" else ",")
        except pd.errors.EmptyDataError as exc:
            raise UserError(f"empty file: {path}") from exc
        except (pd.errors.ParserError, ValueError) as exc:
            raise UserError(f"could not parse {path} as {kind.upper()}: {_one_line(exc)}") from exc
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
            raise UserError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is not a JSON object")
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
    raise UserError(f"{path}: expected a list of records or a dict of columns in the JSON file")


def _read_saved_dataset(path: Path, split: str) -> pd.DataFrame:
    if not any((path / name).exists() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
        raise UserError(f"{path} is a folder, not a data file or a dataset saved with save_to_disk")
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[pick_split(list(ds.keys()), split, str(path))]
    return ds.to_pandas()


def read_hub(name: str, config_name: str | None, split: str) -> pd.DataFrame:
    import datasets

    try:
        builder = datasets.load_dataset_builder(name, config_name)
        available = list((builder.info.splits or {}).keys())
        split_name = pick_split(available, split, name) if available else split
        ds = datasets.load_dataset(name, config_name, split=split_name)
    except ValueError as exc:
        if "splits found" in str(exc):
            raise
        raise _hub_error(name, exc) from exc
    except Exception as exc:  # connection errors, DatasetNotFoundError, FileNotFoundError
        raise _hub_error(name, exc) from exc
    return ds.to_pandas()


def _hub_error(name: str, exc: Exception) -> UserError:
    from huggingface_hub import constants

    detail = _one_line(exc)
    if constants.HF_HUB_OFFLINE or "offline" in detail.lower() or "connect" in detail.lower():
        return UserError(
            f"not available offline: {name} is neither a local file nor a dataset in the Hugging Face cache "
            "(download it once with network access, or pass a CSV/JSON/JSONL/Parquet file)"
        )
    if "config" in detail.lower():
        return UserError(f"could not load the Hub dataset {name}: {detail} (name the dataset configuration)", option="config_name")
    return UserError(f"could not load the Hub dataset {name}: {detail}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def select_split(table: pd.DataFrame, split: str | None, origin: str, default_split: str = "test") -> pd.DataFrame:
    """Rows of `split` from a file's table: by its `split` column if it has one (values train / validation /
    test or their aliases; None = `default_split`), else the whole file, which is one split and has no other."""
    column = _split_column(table)
    if split is None:
        return table if column is None else _rows_of(table, column, default_split, origin)
    if column is None:
        raise UserError(f"{origin} is a single file without a 'split' column, so it has no split {split!r}: leave "
                        "the split out to use the whole file, or add a 'split' column (train / validation / test)",
                        option="split")
    return _rows_of(table, column, split, origin)


def _rows_of(table: pd.DataFrame, column, split: str, origin: str) -> pd.DataFrame:
    """Every row whose split value names the same split as `split` (any case or alias: Dev, dev, val)."""
    names = table[column].astype(str).str.strip()
    chosen = pick_split(sorted(set(names)), split, f"{origin} (column {column!r})")  # refuses a split it lacks
    return table[names.map(split_key) == split_key(chosen)].drop(columns=[column]).reset_index(drop=True)


def _split_column(table: pd.DataFrame):
    return next((c for c in table.columns if str(c).strip().lower() == "split"), None)


def file_has_split_column(path: Path) -> bool:
    """True when a local data file carries a `split` column (read in full: files here are small tables)."""
    try:
        return _split_column(_read_file(path)) is not None
    except UserError:
        return False
