"""Greedy continuation of a prompt by a causal language model, optionally under a head mask.

Deterministic (argmax at every step, ties to the lowest token id) and through the intervention layer
(`masked`), so the shared model is never changed: a masked continuation equals the physically pruned
model's greedy `generate`. No KV cache: every step re-runs the whole sequence (a few dozen new tokens at most).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..core.errors import UserError
from ..model.forward import forward_logits, model_device
from ..model.intervene import inference_view, masked
from ..model.layout import task_of

MAX_NEW_TOKENS = 64


@torch.inference_mode()
def greedy_continuation(model, prompt_ids: Sequence[int], *, keep=None, max_new_tokens: int = 20,
                        stop_ids: Sequence[int] = ()) -> list[int]:
    """The token ids a causal LM appends to `prompt_ids` greedily (under `keep` when given): at most
    `max_new_tokens`, ending after the first id in `stop_ids`."""
    if task_of(model) != "causal-lm":
        raise UserError(f"generation needs a causal language model; this one is a {task_of(model)} model",
                        option="generate")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise UserError(f"max new tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}",
                        option="max_new_tokens")
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model_device(model))  # (1, T)
    if ids.shape[1] == 0:
        raise UserError("the prompt is empty: type some text or pick an example", option="prompt")
    new: list[int] = []
    with masked(model, keep) if keep is not None else contextlib.nullcontext(), inference_view(model) as runner:
        for _ in range(max_new_tokens):
            logits = forward_logits(runner, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})  # (1, T, V)
            token = int(logits[0, -1].argmax())
            new.append(token)
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
            if token in stop_ids:
                break
    return new
