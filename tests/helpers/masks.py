"""Masks and logits for the tests on tiny models: random and hand-written keep-masks, plain forward passes,
and a reference ablation made with a forward hook and no headprune code."""
from __future__ import annotations

import torch

from headprune.model import layout
from headprune.model.tiny import TINY_FAMILIES

# every family on its default task, and the encoders' masked-LM heads too
FAMILY_TASKS = [(f, None) for f in TINY_FAMILIES] + [("bert", "masked-lm"), ("distilbert", "masked-lm"), ("roberta", "masked-lm")]


def inputs(batch):
    """A batch without its labels (a plain forward pass computes no loss)."""
    return {k: v for k, v in batch.items() if k != "labels"}


def logits(model, batch):
    """The model's logits on `batch` (any inputs: token ids, pixels), without gradients."""
    with torch.no_grad():
        return model(**inputs(batch)).logits


def token_logits(model, batch):
    """The model's logits from token ids and attention mask only, without a KV cache for language models."""
    extra = {"use_cache": False} if layout.task_of(model) == "causal-lm" else {}
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits


def random_keep(model, seed=0, p=0.5):
    """A random (L, H) keep-mask keeping each head with probability 1 - p."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(layout.head_grid(model), generator=gen) > p


def random_scores(model, seed=0):
    """Random (L, H) head scores in [0, 1)."""
    return torch.rand(layout.head_grid(model), generator=torch.Generator().manual_seed(seed))


def keep_rows(model, rows):
    """The keep-mask keeping heads `rows[layer]` in each layer."""
    keep = torch.zeros(layout.head_grid(model), dtype=torch.bool)
    for layer, heads in enumerate(rows):
        keep[layer, heads] = True
    return keep


def uneven_keep(model):
    """Heads 0 and 1 of layer 0 and all of layer 1 removed."""
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, :2] = False
    keep[1] = False  # a whole layer
    return keep


def reference_ablation(model, keep, batch):
    """Ablation by a plain forward hook that zeroes the heads' slices with no headprune code involved."""
    dh = layout.head_dim(model)
    handles = []
    for layer, proj in enumerate(layout.out_projections(model)):
        drop = (~keep[layer]).nonzero().flatten().tolist()

        def hook(module, args, drop=drop):
            x = args[0].clone()
            for h in drop:
                x[..., h * dh : (h + 1) * dh] = 0
            return (x,)

        handles.append(proj.register_forward_pre_hook(hook))
    try:
        return logits(model, batch)
    finally:
        for handle in handles:
            handle.remove()
