"""Mapping a raw table onto headprune's columns: `text`, optional `text_pair`, optional integer `label`."""
from __future__ import annotations

import pandas as pd

from ..core.errors import UserError

# a column that starts a pair comes before the column it pairs with ("question" before "sentence", QNLI)
TEXT_COLUMNS = ("text", "question", "sentence", "content", "tweet", "review", "document", "sentence1", "premise",
                "question1", "prompt", "input", "body", "comment", "utterance", "text_a")
PAIR_COLUMNS = {"sentence1": "sentence2", "premise": "hypothesis", "question1": "question2",
                "question": "sentence", "text_a": "text_b", "text": "text_pair"}
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "category", "target", "gold_label", "y", "polarity")


def _listed(columns: list[str]) -> str:
    """Column names for a message: at most 8, each cut to 30 characters (a header is not a place to dump)."""
    shown = [c if len(c) <= 30 else c[:29] + "…" for c in columns[:8]]
    return ", ".join(shown) + (f" (+{len(columns) - 8} more)" if len(columns) > 8 else "")


def _find_column(columns: list[str], wanted: str | None, candidates, what: str, option: str, origin: str,
                 required: bool) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    if wanted is not None:
        if wanted in columns:
            return wanted
        if str(wanted).lower() in lower:
            return lower[str(wanted).lower()]
        raise UserError(f"{origin} has no column {wanted!r}; columns found: {_listed(columns)}", option=option)
    for name in candidates:
        if name in lower:
            return lower[name]
    if required:
        raise UserError(f"{origin} has no {what} column (looked for {', '.join(candidates[:6])}, …); columns "
                        f"found: {_listed(columns)}; name the {what} column", option=option)
    return None


def to_standard(raw: pd.DataFrame, origin: str, text_column, text_pair_column, label_column, label2id) -> pd.DataFrame:
    """`text`, optional `text_pair` and `label` columns from `raw` (guessed by name unless given)."""
    columns = [str(c) for c in raw.columns]
    raw = raw.copy()
    raw.columns = columns
    text = _find_column(columns, text_column, TEXT_COLUMNS, "text", "text_column", origin, True)
    pair_guess = PAIR_COLUMNS.get(text.lower())
    pair = _find_column(columns, text_pair_column, (pair_guess,) if pair_guess else (), "text pair",
                        "text_pair_column", origin, False)
    label = _find_column(columns, label_column, LABEL_COLUMNS, "label", "label_column", origin, False)
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
        raise UserError(f"{origin}: column {column!r} has a missing label (row {row + 1})")
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("int64")
    if pd.api.types.is_numeric_dtype(values):
        as_float = values.astype(float)
        if not (as_float == as_float.round()).all():
            raise UserError(f"{origin}: column {column!r} holds non-integer numbers; headprune evaluates classification labels")
        ids = as_float.astype("int64")
        if label2id:
            n = len(label2id)
            bad = ids[(ids < 0) | (ids >= n)]
            if len(bad):
                raise UserError(
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
            raise UserError(
                f"{origin}: unknown label {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + f"; the model knows: {', '.join(exact)}"
            )
        return strings.map(lambda s: exact[s] if s in exact else lower[s.lower()]).astype("int64").reset_index(drop=True), None
    names = sorted(strings.unique())
    return strings.map({name: i for i, name in enumerate(names)}).astype("int64").reset_index(drop=True), names

