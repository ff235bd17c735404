"""The workload: one model and one data source, batched — what a CLI command or a dashboard session works on.

`open_workload` loads the model (building a preset on first use), checks the options against it before any
work, loads a seeded sample of one split and batches it. Other splits of the same data (held-out judging data,
calibration and training data) come from `split_batches`. A workload is shared by every session of a dashboard
(it is never mutated; its result store is thread-safe); the dense metrics are computed once, on first use.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..core.errors import UserError
from ..core.progress import Progress, report, sub
from ..evaluation.loop import evaluate
from ..evaluation.metrics import Evaluation
from ..model.layout import head_grid, max_positions
from ..presets import load_model
from ..sources.batches import batch_rows, make_batches
from ..sources.data import data_fingerprint, has_splits, load_data
from ..sources.models import LoadedModel

DEFAULT_BATCH_SIZE = {"classification": 32, "masked-lm": 32, "causal-lm": 8}
DATA_OPTIONS = ("text_column", "text_pair_column", "label_column", "config_name")


class ResultStore:
    """Results computed on a workload, shared by every session: (kind, key) -> value, under one lock."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[tuple, Any] = {}

    def get(self, kind: str, key: tuple = ()):
        with self._lock:
            return self._values.get((kind, key))

    def items(self, kind: str) -> list[tuple[tuple, Any]]:
        """Every (key, value) of `kind`, in the order they were first stored."""
        with self._lock:
            return [(key, value) for (k, key), value in self._values.items() if k == kind]

    def put(self, kind: str, key: tuple, value) -> Any:
        with self._lock:
            self._values[(kind, key)] = value
        return value


@dataclass
class Workload:
    """The shared model (never mutated), one split of the data as batches, and how they were made."""

    loaded: LoadedModel
    data_spec: str
    split: str | None
    df: Any  # pandas DataFrame of the examples in `batches`
    batches: list
    settings: dict
    store: ResultStore = field(default_factory=ResultStore, repr=False)
    _dense: Evaluation | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self):
        return self.loaded.model

    @property
    def shape(self) -> tuple[int, int]:
        return head_grid(self.model)

    @property
    def data_fingerprint(self) -> str:
        return self.settings["data_fingerprint"]

    @property
    def key(self) -> str:
        """Identifies model + data + sample (caches of scores and curves are keyed on it)."""
        return f"{self.loaded.model_id}|{self.data_fingerprint}|{len(self.df)}"

    @property
    def dense(self) -> Evaluation:
        """The dense model's metrics on `batches` (computed once)."""
        with self._lock:
            if self._dense is None:
                self._dense = evaluate(self.model, self.batches, task=self.loaded.task)
            return self._dense

    @property
    def rows(self) -> list[int]:
        """The data frame's row positions in batch order (per-example results map back through it)."""
        found = self.store.get("rows")
        if found is None:
            found = self.store.put("rows", (), batch_rows(self.loaded.tokenizer, self.df,
                                                          max_length=self.settings["max_length"]))
        return found

    def example_ids(self, position: int) -> list[int]:
        """Token ids (real tokens, as evaluated) of the example at `position` in batch order."""
        offset = position
        for batch in self.batches:
            size = int(batch["input_ids"].shape[0])
            if 0 <= offset < size:
                ids, mask = batch["input_ids"][offset], batch["attention_mask"][offset].bool()
                return ids[mask].tolist()
            offset -= size
        raise UserError(f"example position {position} is past the last example ({position - offset} examples)")

    def with_limit(self, limit: int) -> "Workload":
        """The same model and data with a seeded sample of `limit` rows (as `open_workload(..., limit=limit)`
        would make it, without loading the model again)."""
        s = self.settings
        df, batches = split_batches(self.loaded, self.data_spec, self.split, default_split=s["default_split"],
                                    limit=limit, batch_size=s["batch_size"], max_length=s["max_length"], seed=s["seed"],
                                    data_options=self.data_options())
        settings = {**s, "limit": limit, "data_fingerprint": data_fingerprint(df)}
        return Workload(loaded=self.loaded, data_spec=self.data_spec, split=self.split, df=df, batches=batches,
                        settings=settings)

    def data_options(self) -> dict:
        return {k: self.settings[k] for k in DATA_OPTIONS if self.settings.get(k) is not None}


def check_max_length(loaded: LoadedModel, max_length) -> int:
    """`max_length` must be a whole number ≥ 2 within the model's positions."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise UserError(f"max length must be a whole number ≥ 2, got {max_length!r}", option="max_length")
    limit = max_positions(loaded.model)
    if limit is not None and max_length > limit:
        raise UserError(f"max length {max_length} is more than this model reads ({limit} tokens); choose "
                        f"{limit} or less", option="max_length")
    return max_length


def split_batches(loaded: LoadedModel, data_spec: str, split: str | None, *, default_split: str = "test",
                  limit: int | None = None, batch_size: int | None = None, max_length: int = 128, seed: int = 0,
                  data_options: Mapping[str, Any] | None = None):
    """(data frame, batches) of one split of `data_spec` for `loaded`: a seeded sample of `limit` rows
    (split None: `default_split` where the data has splits, else all of a plain file)."""
    df = load_data(data_spec, split=split, default_split=default_split, limit=limit, seed=seed,
                   label2id=loaded.label2id if loaded.task == "classification" else None, **dict(data_options or {}))
    size = batch_size or DEFAULT_BATCH_SIZE.get(loaded.task, 32)
    return df, make_batches(loaded.tokenizer, df, loaded.task, batch_size=size, max_length=max_length, seed=seed)


def open_workload(model_spec: str, data_spec: str = "tweets", *, split: str | None = None,
                  default_split: str = "test", limit: int | None = None,
                  batch_size: int | None = None, max_length: int = 128, seed: int = 0,
                  data_options: Mapping[str, Any] | None = None, trust_remote_code: bool = False,
                  progress: Progress | None = None) -> Workload:
    """Load the model and a seeded sample of `limit` rows of one split of the data, batched.

    split: None = `default_split` where the data has splits, else all of a plain file. `data_options`: column names and the Hub config
    name (`text_column`, `text_pair_column`, `label_column`, `config_name`).
    """
    unknown = set(data_options or {}) - set(DATA_OPTIONS)
    if unknown:
        raise UserError(f"unknown data options {sorted(unknown)}; known: {', '.join(DATA_OPTIONS)}")
    loaded = load_model(model_spec, trust_remote_code=trust_remote_code, progress=sub(progress, 0.0, 0.9))
    check_max_length(loaded, max_length)
    report(progress, 0.92, f"loading {data_spec}")
    df, batches = split_batches(loaded, data_spec, split, default_split=default_split, limit=limit,
                                batch_size=batch_size, max_length=max_length, seed=seed, data_options=data_options)
    split = split or (default_split if has_splits(data_spec, config_name=(data_options or {}).get("config_name")) else None)
    settings = {"limit": limit, "split": split, "default_split": default_split, "max_length": max_length, "seed": seed,
                "batch_size": batch_size or DEFAULT_BATCH_SIZE.get(loaded.task, 32),
                "data_fingerprint": data_fingerprint(df), **dict(data_options or {})}
    report(progress, 1.0, f"{len(df)} examples ready")
    return Workload(loaded=loaded, data_spec=str(data_spec), split=split, df=df, batches=batches, settings=settings)
