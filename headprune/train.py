"""A small, seeded training loop for classifiers and language models (AdamW, linear warm-up and decay).

Used to build the `minilm-tweets` preset and, through `loss_fn`, by recovery fine-tuning (distillation).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

import torch

from .evaluate import model_device, to_device

Progress = Callable[[float, str], None]
LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_")


def default_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The model's own loss (`labels` in the batch)."""
    return model(**batch).loss


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train(
    model: torch.nn.Module,
    batches,
    *,
    epochs: int = 1,
    lr: float = 5e-5,
    weight_decay: float = 0.01,
    warmup_frac: float = 0.06,
    max_grad_norm: float | None = 1.0,
    seed: int = 0,
    shuffle: bool = True,
    progress: Progress | None = None,
    loss_fn: LossFn | None = None,
) -> dict:
    """Train `model` in place on `batches` (dicts for `model(**batch)`); returns a summary.

    Reproducible: batch order and dropout come from `seed` (the caller's global RNG state is restored
    afterwards). `loss_fn(model, batch) -> loss` replaces the default `model(**batch).loss`.
    Returns `steps`, `epochs`, `losses` (one per step), `mean_loss`, `final_loss` (mean of the last
    10% of steps) and `seconds`. The model is left in eval mode.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("nothing to train on: no batches")
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    loss_fn = loss_fn or default_loss
    device = model_device(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(tag in name for tag in NO_DECAY) else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    total = epochs * len(batches)
    warmup = int(warmup_frac * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule(step, total, warmup))
    order_gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model.train()
        try:
            step = 0
            for epoch in range(epochs):
                order = torch.randperm(len(batches), generator=order_gen).tolist() if shuffle else range(len(batches))
                for i in order:
                    loss = loss_fn(model, to_device(batches[i], device))
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"the training loss became {float(loss)} at step {step + 1}; lower the learning rate")
                    loss.backward()
                    if max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
                    step += 1
                    if progress is not None:
                        elapsed = time.perf_counter() - start
                        eta = elapsed / step * (total - step)
                        recent = losses[-20:]
                        progress(step / total, f"epoch {epoch + 1}/{epochs} step {step}/{total} "
                                               f"loss {sum(recent) / len(recent):.3f} ETA {format_seconds(eta)}")
        finally:
            model.eval()
            optimizer.zero_grad(set_to_none=True)
    tail = losses[-max(1, math.ceil(len(losses) / 10)):]
    return {
        "steps": len(losses),
        "epochs": epochs,
        "losses": losses,
        "mean_loss": sum(losses) / len(losses),
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - start,
    }


class TqdmProgress:
    """A `progress(fraction, message)` callback drawing a tqdm bar on stderr; use as a context manager."""

    def __init__(self, description: str, *, disable: bool = False):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1000, desc=description, file=sys.stderr, disable=disable, leave=True,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self._done = 0

    def __call__(self, fraction: float, message: str = "") -> None:
        target = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if target > self._done:
            self._bar.update(target - self._done)
            self._done = target
        if message:
            self._bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
