"""Set-ups for the head-importance tests: tiny models with padded batches, a float64 loss under gates, and
constructed attention patterns with known roles."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from headprune.model import layout
from headprune.model.forward import forward_logits
from headprune.model.intervene import gated
from headprune.model.tiny import tiny_batch, tiny_model

FAMILIES = ["bert", "gpt2", "llama"]  # encoder classifier, GPT-2, grouped-query Llama
T = 8  # tokens per constructed pattern


def setup(family, n_batches=2, batch_size=4):
    """A tiny `family` model and `n_batches` seeded batches of `batch_size` padded examples."""
    model = tiny_model(family)
    return model, [tiny_batch(model, batch_size=batch_size, seed=s) for s in range(n_batches)]


def loss(model, batch, gates):
    """Mean per-example loss (LM: per-sequence token mean) in float64, under gates (L, H)."""
    with torch.no_grad(), gated(model, gates):
        logits = forward_logits(model, batch).double()
    labels = batch["labels"]
    if layout.task_of(model) == "classification":
        return F.cross_entropy(logits, labels).item()
    logits, labels = logits[:, :-1], labels[:, 1:]
    tokens = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
    return (tokens.sum(-1) / (labels != -100).sum(-1)).mean().item()


def patterns(lengths):
    """One layer, 5 heads over a right-padded batch: previous-token, next-token, [CLS] sink, uniform, self."""
    batch = len(lengths)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    attn = torch.zeros(batch, 5, T, T)
    for b, n in enumerate(lengths):
        for i in range(n):
            attn[b, 0, i, max(i - 1, 0)] = 1.0
            attn[b, 1, i, min(i + 1, n - 1)] = 1.0
            attn[b, 2, i, 0] = 1.0
            attn[b, 3, i, :n] = 1.0 / n
            attn[b, 4, i, i] = 1.0
    return attn, mask
