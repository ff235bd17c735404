"""Tokenise once, sort by length, pad each batch only to its own longest example.

`make_batches` returns a list of dicts that `model(**batch)` accepts, each with `labels`:
classification → int64 (B,); causal-lm → the input ids with padding set to -100;
masked-lm → 15% of the non-special tokens replaced by the mask token (seeded), -100 elsewhere.
"""
from __future__ import annotations

import collections
import threading

import pandas as pd
import torch

from ..core.errors import UserError
from ..core.types import IGNORE_INDEX, TASKS
from .data import data_fingerprint

MASK_FRACTION = 0.15

_CACHE: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id; tokenizers without one (GPT-2, Llama) pad with eos."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise UserError("the tokenizer has neither a pad nor an end-of-sequence token, so batches cannot be padded")


def make_batches(
    tokenizer,
    df: pd.DataFrame,
    task: str,
    *,
    batch_size: int = 32,
    max_length: int = 128,
    limit: int | None = None,
    seed: int = 0,
) -> list[dict[str, torch.Tensor]]:
    """Length-sorted, dynamically padded batches of `df` (columns `text`, optional `text_pair`, `label`).

    The result is cached (tokenizer, data fingerprint, parameters), so a repeated call is instant;
    the batch tensors are shared between calls, so do not modify them in place.
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size must be a positive whole number, got {batch_size!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise UserError(f"max length must be a whole number ≥ 2, got {max_length!r}")
    if "text" not in df.columns:
        raise UserError(f"the data has no 'text' column; columns: {', '.join(map(str, df.columns))}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UserError(f"limit must be a positive whole number, got {limit!r}")
        if limit < len(df):
            df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    if len(df) == 0:
        raise UserError("no examples to batch: the data is empty")
    if task == "classification" and "label" not in df.columns:
        raise UserError("the data has no labels, which a classifier needs: name its label column", option="label_column")
    max_length = _max_length(tokenizer, max_length)
    name = getattr(tokenizer, "name_or_path", "") or f"id{id(tokenizer)}"
    key = (name, type(tokenizer).__name__, len(tokenizer), data_fingerprint(df), task, batch_size, max_length, seed)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return list(_CACHE[key])
    batches = _build(tokenizer, df, task, batch_size, max_length, seed)
    with _CACHE_LOCK:
        _CACHE[key] = batches
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return list(batches)


def clear_cache() -> None:
    """Forget cached batches (tests, or to free memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _max_length(tokenizer, max_length: int) -> int:
    """`max_length`, or less when the tokenizer's model reads fewer tokens."""
    model_max = getattr(tokenizer, "model_max_length", None)
    return model_max if isinstance(model_max, int) and 1 < model_max < max_length else max_length


def _encode(tokenizer, df: pd.DataFrame, max_length: int, *, special: bool = False):
    texts = df["text"].astype(str).tolist()
    pairs = df["text_pair"].astype(str).tolist() if "text_pair" in df.columns else None
    return tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False,
                     return_special_tokens_mask=special)


def _order(ids: list[list[int]]) -> list[int]:
    """Example positions in batch order: longest first (memory errors surface early), ties by position."""
    return sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))


def batch_rows(tokenizer, df: pd.DataFrame, *, max_length: int = 128) -> list[int]:
    """The row positions of `df` in the order `make_batches` puts them (batches are consecutive runs of this
    list), so per-example results in batch order map back to rows."""
    return _order(_encode(tokenizer, df, _max_length(tokenizer, max_length))["input_ids"])


def _build(tokenizer, df: pd.DataFrame, task: str, batch_size: int, max_length: int, seed: int):
    enc = _encode(tokenizer, df, max_length, special=task == "masked-lm")
    ids = enc["input_ids"]
    type_ids = enc.get("token_type_ids")
    special = enc.get("special_tokens_mask")
    labels = df["label"].astype("int64").tolist() if task == "classification" else None
    pad = pad_token_id(tokenizer)
    if task == "masked-lm" and tokenizer.mask_token_id is None:
        raise UserError("this tokenizer has no mask token, so it cannot be evaluated as a masked language model")
    if task == "causal-lm" and max(len(x) for x in ids) < 2:
        raise UserError("every text is a single token: a causal language model needs at least two tokens to predict")

    order = _order(ids)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        token_types = torch.zeros((len(rows), width), dtype=torch.long) if type_ids is not None else None
        for r, i in enumerate(rows):
            n = len(ids[i])
            input_ids[r, :n] = torch.tensor(ids[i], dtype=torch.long)
            attention[r, :n] = 1
            if token_types is not None:
                token_types[r, :n] = torch.tensor(type_ids[i], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if token_types is not None:
            batch["token_type_ids"] = token_types
        if task == "classification":
            batch["labels"] = torch.tensor([labels[i] for i in rows], dtype=torch.long)  # (B,)
        elif task == "causal-lm":
            batch["labels"] = input_ids.masked_fill(attention == 0, IGNORE_INDEX)  # (B, T)
        else:
            maskable = attention.bool()
            for r, i in enumerate(rows):
                maskable[r, :len(ids[i])] &= ~torch.tensor(special[i], dtype=torch.bool)
            batch["input_ids"], batch["labels"] = _mask_tokens(input_ids, maskable, tokenizer.mask_token_id, generator)
        batches.append(batch)
    return batches


def _mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, generator: torch.Generator):
    """Replace ~15% of maskable tokens (at least one per row that has any) by `mask_id`; labels elsewhere -100."""
    draw = torch.rand(input_ids.shape, generator=generator)  # (B, T)
    chosen = (draw < MASK_FRACTION) & maskable
    empty = ~chosen.any(dim=1) & maskable.any(dim=1)
    if empty.any():  # force one masked token in rows that drew none: the lowest draw among maskable tokens
        first = draw.masked_fill(~maskable, 2.0).argmin(dim=1)  # (B,)
        rows = empty.nonzero(as_tuple=True)[0]
        chosen[rows, first[rows]] = True
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    return input_ids.masked_fill(chosen, mask_id), labels


def limit_examples(batches: list[dict], max_examples: int | None) -> list[dict]:
    """The first `max_examples` examples in batch order (the last batch sliced), or all of them."""
    batches = list(batches)
    if not batches:
        raise UserError("no batches: nothing to work on")
    if max_examples is None:
        return batches
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise UserError(f"max examples must be a positive whole number, got {max_examples!r}", option="max_examples")
    out, left = [], max_examples
    for batch in batches:
        size = int(batch["input_ids"].shape[0])
        out.append(batch if size <= left else {k: v[:left] for k, v in batch.items()})
        left -= min(size, left)
        if left == 0:
            break
    return out


def count_examples(batches: list[dict]) -> int:
    """Examples in `batches`."""
    return sum(int(b["input_ids"].shape[0]) for b in batches)
