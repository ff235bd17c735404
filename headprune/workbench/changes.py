"""What a mask does to real examples, over a workload: flipped examples and loss movers with their texts,
the heads responsible for one example, greedy generation side by side, and a mask's numbers in one row."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core.errors import UserError
from ..core.records import Record
from ..evaluation.cost import flops_per_token, params_after
from ..evaluation.examples import (
    ExampleChanges,
    ExampleOutputs,
    HeadEffect,
    compare_examples,
    responsible_heads,
)
from ..evaluation.generation import greedy_continuation
from ..evaluation.metrics import Evaluation
from ..model.units import kv_cache_bytes_per_token
from ..sources.batches import make_batches
from ..sources.tokens import display_tokens
from .workload import Workload


def label_names(workload: Workload) -> list[str] | None:
    """Names of the label ids (the model's, else the data's), or None."""
    return workload.loaded.label_names or workload.df.attrs.get("label_names")


def changes(workload: Workload, before: ExampleOutputs, after: ExampleOutputs, *, top: int = 10) -> ExampleChanges:
    """`compare_examples` over the workload's examples: texts, labels and tokens as a reader sees them, each
    example named by its row in the workload's data frame."""
    rows = workload.rows
    texts = workload.df["text"].astype(str).iloc[rows].tolist()
    tokenizer = workload.loaded.tokenizer
    return compare_examples(before, after, texts, index=rows, label_names=label_names(workload), top=top,
                            tokens=lambda i: display_tokens(tokenizer, workload.example_ids(i)))


def one_example(workload: Workload, row: int) -> dict:
    """A batch of the single example in row `row` of the workload's data frame, batched as the workload."""
    if not 0 <= row < len(workload.df):
        raise UserError(f"example {row} is not among the {len(workload.df)} live examples", option="example")
    return make_batches(workload.loaded.tokenizer, workload.df.iloc[[row]].reset_index(drop=True), workload.loaded.task,
                        batch_size=1, max_length=int(workload.settings["max_length"]))[0]


def heads_responsible(workload: Workload, row: int, keep, *, top: int = 3) -> tuple[HeadEffect, ...]:
    """The `top` removed heads of `keep` whose return alone lowers example `row`'s loss most."""
    return responsible_heads(workload.model, one_example(workload, row), keep)[:top]


@dataclass(frozen=True)
class Continuation(Record):
    """A greedy continuation of a prompt by one mask: name (dense, A, B, ...), heads kept, the new text and
    its tokens as a reader sees them."""

    name: str
    heads_kept: int
    text: str
    tokens: tuple[str, ...]


def continuations(workload: Workload, prompt: str, masks: Mapping[str, Any], *,
                  max_new_tokens: int = 20) -> tuple[Continuation, ...]:
    """Greedy continuations of `prompt` by each named mask (None: the dense model), deterministic."""
    if workload.loaded.task != "causal-lm":
        raise UserError(f"generation side by side needs a causal language model; {workload.loaded.model_id} is a "
                        f"{workload.loaded.task} model", option="generate")
    tokenizer = workload.loaded.tokenizer
    ids = tokenizer(str(prompt).strip(), truncation=True, max_length=int(workload.settings["max_length"]))["input_ids"]
    stop = [t for t in (tokenizer.eos_token_id,) if t is not None]
    out = []
    for name, keep in masks.items():
        new = greedy_continuation(workload.model, ids, keep=keep, max_new_tokens=max_new_tokens, stop_ids=stop)
        kept = int(torch.as_tensor(keep).sum()) if keep is not None else workload.shape[0] * workload.shape[1]
        out.append(Continuation(name=name, heads_kept=kept, text=tokenizer.decode(new, skip_special_tokens=True),
                                tokens=tuple(display_tokens(tokenizer, new))))
    return tuple(out)


@dataclass(frozen=True)
class MaskSummary(Record):
    """One mask's numbers on the workload's examples: quality (accuracy, or next-token accuracy for language
    models), loss, heads, FLOPs per token, parameters, KV cache bytes per token, and the measured latency
    (median ms, physically pruned) when it was measured."""

    heads_kept: int
    heads_total: int
    quality: float
    loss: float
    flops_per_token: float
    params: int
    kv_cache_bytes_per_token: int
    latency_ms: float | None


def summary(workload: Workload, keep, result: Evaluation, latency_ms: float | None) -> MaskSummary:
    """`MaskSummary` of `keep` (None: dense) with its evaluation `result`."""
    model = workload.model
    keep = torch.ones(workload.shape, dtype=torch.bool) if keep is None else torch.as_tensor(keep).bool()
    return MaskSummary(heads_kept=int(keep.sum()), heads_total=int(keep.numel()), quality=float(result["accuracy"]),
                       loss=float(result["loss"]), flops_per_token=float(flops_per_token(model, keep)),
                       params=int(params_after(model, keep)), kv_cache_bytes_per_token=int(kv_cache_bytes_per_token(model, keep)),
                       latency_ms=latency_ms)
