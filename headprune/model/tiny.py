"""Tiny randomly initialised models of every family with a tiny config, built from configs (no download).

For tests, demos and teaching: a large `initializer_range` makes every head matter visibly, so masking one
changes the output. `tiny_model("llama")` has grouped-query attention (6 query heads in 2 KV groups). The
configs are the adapters' `tiny` entries, so a new family brings its own.
"""
from __future__ import annotations

import torch
import transformers

from ..core.errors import UserError
from ..core.types import TASKS
from .adapters import adapter_for, adapters
from .layout import task_of

TINY_VOCAB = 128
_AUTO_CLASS = {"classification": "AutoModelForSequenceClassification", "causal-lm": "AutoModelForCausalLM",
               "masked-lm": "AutoModelForMaskedLM"}


def tiny_families() -> tuple[str, ...]:
    """Families that have a tiny text config."""
    return tuple(a.family for a in adapters() if a.tiny)


def tiny_config(family: str, *, num_labels: int = 3, initializer_range: float = 0.3, **overrides):
    """The config of a tiny `family` model (see `tiny_families()`)."""
    found = [a for a in adapters() if a.family == family and a.tiny]
    if not found:
        raise UserError(f"no tiny config for {family!r}; choose one of {', '.join(tiny_families())}")
    adapter = found[0]
    kwargs = {**adapter.tiny, "vocab_size": TINY_VOCAB, "initializer_range": initializer_range,
              "num_labels": num_labels, **overrides}
    return transformers.AutoConfig.for_model(adapter.model_types[0], **kwargs)


def tiny_model(family: str, task: str | None = None, *, seed: int = 0, **overrides):
    """A tiny random `family` model for `task` (default: classification for encoders, causal-lm for
    decoders), in eval mode, fp32, with the default attention implementation."""
    config = tiny_config(family, **overrides)
    task = task or ("causal-lm" if adapter_for(config).causal else "classification")
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    torch.manual_seed(seed)
    return getattr(transformers, _AUTO_CLASS[task]).from_config(config).eval()


def tiny_batch(model, *, batch_size: int = 4, seq_len: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch for `model` with ragged padding (right-padded) and task-appropriate labels."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_VOCAB, (batch_size, seq_len), generator=gen)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch_size,), generator=gen)
    lengths[0] = seq_len
    attention = (torch.arange(seq_len)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(attention == 0, 0)
    if task_of(model) == "classification":
        labels = torch.randint(0, model.config.num_labels, (batch_size,), generator=gen)
    else:
        labels = ids.masked_fill(attention == 0, -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


TINY_FAMILIES = tiny_families()
