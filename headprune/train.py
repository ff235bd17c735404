"""A small, seeded training loop for classifiers and language models (AdamW, linear warm-up and decay).

Used to build the `minilm-tweets` preset and, through `loss_fn`, by recovery fine-tuning (distillation).
"""
from __future__ import annotations

import contextlib
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


def make_adamw(groups, *, lr: float) -> torch.optim.AdamW:
    """AdamW, fused where the device supports it (on CPU about 10x faster steps than the per-tensor loop)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


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
    max_steps: int | None = None,
    grad_accum: int = 1,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    accelerator=None,
) -> dict:
    """Train `model` in place on `batches` (dicts for `model(**batch)`); returns a summary.

    Reproducible: batch order and dropout come from `seed` (the caller's global RNG state is restored
    afterwards). `loss_fn(model, batch) -> loss` replaces the default `model(**batch).loss`.
    One optimizer step uses `grad_accum` batches per process (loss averaged over them).

    Optional hooks, all applied at step boundaries:
    * `max_steps` sets the number of optimizer steps, overriding `epochs` (as in the HF Trainer);
    * `should_stop()` is asked before every step; True ends training early (`stopped` in the summary);
    * `on_checkpoint(state)` receives the training state every `checkpoint_every` steps, when stopped, and on
      Ctrl-C (KeyboardInterrupt, re-raised after it): `step`, `optimizer`, `scheduler` (state dicts),
      `rng` (one CPU RNG state per process), `cuda_rng`, `losses`. The model's weights are the caller's to save;
    * `resume=state` (one such state, with the model's weights already restored) continues from its step and
      ends with the same weights as an uninterrupted run;
    * `accelerator` (an `accelerate.Accelerator`) runs data-parallel: the model is wrapped in DDP, process r
      takes batches r, r+W, ... of each step's slice of the seeded order, gradients are averaged, and
      only the main process receives `on_checkpoint`. A W-process run equals a 1-process run with
      `grad_accum` multiplied by W (up to float rounding; dropout draws differ).

    Returns `steps`, `epochs`, `losses` (mean over processes, one per step), `mean_loss`, `final_loss`
    (mean of the last 10% of steps), `seconds`, `stopped` and `start_step`. The model is left in eval mode.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("nothing to train on: no batches")
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be ≥ 1, got {max_steps}")
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be ≥ 1, got {grad_accum}")
    loss_fn = loss_fn or default_loss
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    device = accelerator.device if accelerator is not None else model_device(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(tag in name for tag in NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = make_adamw(groups, lr=lr)
    per_step = world * grad_accum  # batches consumed by one optimizer step, all processes together
    steps_per_epoch = math.ceil(len(batches) / per_step)
    if max_steps is not None:  # as in HF Trainer, max_steps overrides epochs
        epochs = math.ceil(max_steps / steps_per_epoch)
    total = epochs * steps_per_epoch if max_steps is None else max_steps
    warmup = int(warmup_frac * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule(step, total, warmup))
    runner = accelerator.prepare_model(model) if accelerator is not None else model  # DDP wrapper when W > 1
    order_gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start_step = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        losses = list(resume["losses"])
        start_step = int(resume["step"])
        if start_step > total:
            raise ValueError(f"the checkpoint is at step {start_step}, past this run's {total} steps")

    def epoch_order() -> list[int]:
        order = torch.randperm(len(batches), generator=order_gen).tolist() if shuffle else list(range(len(batches)))
        return (order * math.ceil(steps_per_epoch * per_step / len(order)))[: steps_per_epoch * per_step]

    def any_process(flag: bool) -> bool:
        if world == 1:
            return flag
        return bool(accelerator.reduce(torch.tensor([float(flag)], device=device), "sum").item() > 0)

    def state(step: int) -> dict:
        from accelerate.utils import gather_object

        rng = [torch.get_rng_state()]
        out = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "rng": gather_object(rng) if world > 1 else rng, "losses": list(losses)}
        if device.type == "cuda":
            out["cuda_rng"] = torch.cuda.get_rng_state(device)
        return out

    def checkpoint(step: int) -> None:
        snapshot = state(step)  # collective when W > 1: every process takes part
        if on_checkpoint is not None and (accelerator is None or accelerator.is_main_process):
            on_checkpoint(snapshot)
        if accelerator is not None:
            accelerator.wait_for_everyone()

    step = start_step
    stopped = False
    updating = False
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed + rank)
        if resume is not None and len(resume.get("rng", [])) == world:
            torch.set_rng_state(resume["rng"][rank])
            if device.type == "cuda" and "cuda_rng" in resume:
                torch.cuda.set_rng_state(resume["cuda_rng"], device)
        runner.train()
        try:
            for epoch in range(epochs):
                order = epoch_order()  # drawn for every epoch, skipped ones too, so resuming keeps the order
                for i in range(steps_per_epoch):
                    if epoch * steps_per_epoch + i < step:
                        continue
                    if step >= total:
                        break
                    if should_stop is not None and any_process(bool(should_stop())):
                        stopped = True
                        break
                    step_loss = torch.zeros((), device=device)
                    for m in range(grad_accum):
                        batch = to_device(batches[order[(i * grad_accum + m) * world + rank]], device)
                        sync = m == grad_accum - 1 or accelerator is None
                        with (accelerator.no_sync(runner) if not sync else contextlib.nullcontext()):
                            loss = loss_fn(runner, batch) / grad_accum
                            if not torch.isfinite(loss):
                                raise FloatingPointError(f"the training loss became {float(loss)} at step {step + 1}; lower the learning rate")
                            (accelerator.backward(loss) if accelerator is not None else loss.backward())
                        step_loss += loss.detach()
                    if max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
                    updating = True  # a Ctrl-C from here until `updating = False` leaves no consistent state
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    updating = False
                    if world > 1:
                        step_loss = accelerator.reduce(step_loss, "mean")
                    losses.append(float(step_loss))
                    if checkpoint_every and step % checkpoint_every == 0 and step < total:
                        checkpoint(step)
                    if progress is not None:
                        elapsed = time.perf_counter() - start
                        eta = elapsed / (step - start_step) * (total - step)
                        recent = losses[-20:]
                        progress(step / total, f"epoch {epoch + 1}/{epochs} step {step}/{total} "
                                               f"loss {sum(recent) / len(recent):.3f} ETA {format_seconds(eta)}")
                if stopped or step >= total:
                    break
            if stopped:
                checkpoint(step)
        except KeyboardInterrupt:
            if not updating and world == 1 and on_checkpoint is not None:
                optimizer.zero_grad(set_to_none=True)
                on_checkpoint(state(step))
            raise
        finally:
            runner.eval()
            optimizer.zero_grad(set_to_none=True)
    tail = losses[-max(1, math.ceil(len(losses) / 10)):] if losses else [float("nan")]
    return {
        "steps": step,
        "start_step": start_step,
        "epochs": epochs,
        "losses": losses,
        "mean_loss": sum(losses) / len(losses) if losses else float("nan"),
        "final_loss": sum(tail) / len(tail),
        "seconds": time.perf_counter() - start,
        "stopped": stopped,
    }


class TqdmProgress:
    """A `progress(fraction, message)` callback drawing a tqdm bar on stderr; use as a context manager."""

    def __init__(self, description: str, *, disable: bool = False):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=1000, desc=description, file=sys.stderr, disable=disable, leave=True, smoothing=0,
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
