"""A small, seeded training loop for classifiers and language models (AdamW, linear warm-up and decay).

Used to build the `minilm-tweets` preset and, through `loss_fn`, by recovery fine-tuning (distillation).
Reproducible: batch order and dropout come from the seed; a run resumed from a checkpoint state ends with the
same weights as an uninterrupted one; under Accelerate it runs data-parallel (DDP).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..model.forward import model_device, to_device

LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "ln_")


def default_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The model's own loss (`labels` in the batch)."""
    return model(**batch).loss


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


def _check(batches: list, epochs: int, max_steps: int | None, grad_accum: int) -> None:
    if not batches:
        raise UserError("nothing to train on: no batches")
    if epochs < 1:
        raise UserError(f"epochs must be ≥ 1, got {epochs}", option="epochs")
    if max_steps is not None and max_steps < 1:
        raise UserError(f"max_steps must be ≥ 1, got {max_steps}", option="max_steps")
    if grad_accum < 1:
        raise UserError(f"grad_accum must be ≥ 1, got {grad_accum}", option="grad_accum")


class _Loop:
    """The state of one training run: optimizer, schedule, step, losses, and how batches are dealt out."""

    def __init__(self, model, batches, *, epochs, lr, weight_decay, warmup_frac, seed, shuffle, max_steps,
                 grad_accum, accelerator):
        self.model, self.batches, self.seed, self.shuffle = model, batches, seed, shuffle
        self.grad_accum, self.accelerator = grad_accum, accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.device = accelerator.device if accelerator is not None else model_device(model)
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (no_decay if any(tag in name for tag in NO_DECAY) else decay).append(param)
        self.optimizer = make_adamw([{"params": decay, "weight_decay": weight_decay},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        self.per_step = self.world * grad_accum  # batches consumed by one optimizer step, all processes together
        self.steps_per_epoch = math.ceil(len(batches) / self.per_step)
        if max_steps is not None:  # as in HF Trainer, max_steps overrides epochs
            epochs = math.ceil(max_steps / self.steps_per_epoch)
        self.epochs = epochs
        self.total = epochs * self.steps_per_epoch if max_steps is None else max_steps
        warmup = int(warmup_frac * self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: linear_schedule(step, self.total, warmup))
        self.runner = accelerator.prepare_model(model) if accelerator is not None else model  # DDP when W > 1
        self.order_gen = torch.Generator().manual_seed(seed)
        self.losses: list[float] = []
        self.step = self.start_step = 0
        self.updating = False

    def resume(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.losses = list(state["losses"])
        self.step = self.start_step = int(state["step"])
        if self.start_step > self.total:
            raise UserError(f"the checkpoint is at step {self.start_step}, past this run's {self.total} steps")

    def epoch_order(self) -> list[int]:
        """This epoch's batch order (drawn for every epoch, skipped ones too, so resuming keeps the order)."""
        n = len(self.batches)
        order = torch.randperm(n, generator=self.order_gen).tolist() if self.shuffle else list(range(n))
        wanted = self.steps_per_epoch * self.per_step
        return (order * math.ceil(wanted / len(order)))[:wanted]

    def any_process(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor([float(flag)], device=self.device), "sum").item() > 0)

    def state(self) -> dict:
        from accelerate.utils import gather_object

        rng = [torch.get_rng_state()]
        out = {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
               "rng": gather_object(rng) if self.world > 1 else rng, "losses": list(self.losses)}
        if self.device.type == "cuda":
            out["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return out

    def restore_rng(self, state: dict | None) -> None:
        torch.manual_seed(self.seed + self.rank)
        if state is not None and len(state.get("rng", [])) == self.world:
            torch.set_rng_state(state["rng"][self.rank])
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def backward_batches(self, order: list[int], i: int, loss_fn: LossFn) -> torch.Tensor:
        """Forward and backward over this step's `grad_accum` batches; the step's loss (this process)."""
        step_loss = torch.zeros((), device=self.device)
        for m in range(self.grad_accum):
            batch = to_device(self.batches[order[(i * self.grad_accum + m) * self.world + self.rank]], self.device)
            sync = m == self.grad_accum - 1 or self.accelerator is None
            with (self.accelerator.no_sync(self.runner) if not sync else contextlib.nullcontext()):
                loss = loss_fn(self.runner, batch) / self.grad_accum
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {float(loss)} at step {self.step + 1}; "
                                             "lower the learning rate")
                (self.accelerator.backward(loss) if self.accelerator is not None else loss.backward())
            step_loss += loss.detach()
        return step_loss


    def checkpoint(self, on_checkpoint) -> None:
        """Hand the state to `on_checkpoint` on the main process (collective when W > 1: every process joins)."""
        snapshot = self.state()
        if on_checkpoint is not None and (self.accelerator is None or self.accelerator.is_main_process):
            on_checkpoint(snapshot)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def step_once(self, order: list[int], i: int, loss_fn: LossFn, max_grad_norm: float | None) -> None:
        """One optimizer step; `updating` marks the stretch a Ctrl-C would leave inconsistent."""
        step_loss = self.backward_batches(order, i, loss_fn)
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        self.updating = True
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.updating = False
        if self.world > 1:
            step_loss = self.accelerator.reduce(step_loss, "mean")
        self.losses.append(float(step_loss))

    def run(self, loss_fn: LossFn, *, max_grad_norm, should_stop, checkpoint_every, on_checkpoint, progress,
            start: float) -> bool:
        """Every remaining step, epoch by epoch; returns whether `should_stop` ended it early."""
        for epoch in range(self.epochs):
            order = self.epoch_order()
            for i in range(self.steps_per_epoch):
                if epoch * self.steps_per_epoch + i < self.step:
                    continue
                if self.step >= self.total:
                    break
                if should_stop is not None and self.any_process(bool(should_stop())):
                    self.checkpoint(on_checkpoint)
                    return True
                self.step_once(order, i, loss_fn, max_grad_norm)
                if checkpoint_every and self.step % checkpoint_every == 0 and self.step < self.total:
                    self.checkpoint(on_checkpoint)
                _report_step(progress, self, epoch)
            if self.step >= self.total:
                break
        return False


def train(model: torch.nn.Module, batches, *, epochs: int = 1, lr: float = 5e-5, weight_decay: float = 0.01,
          warmup_frac: float = 0.06, max_grad_norm: float | None = 1.0, seed: int = 0, shuffle: bool = True,
          progress: Progress | None = None, loss_fn: LossFn | None = None, max_steps: int | None = None,
          grad_accum: int = 1, should_stop: Callable[[], bool] | None = None, checkpoint_every: int | None = None,
          on_checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None,
          accelerator=None) -> dict:
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
    _check(batches, epochs, max_steps, grad_accum)
    loop = _Loop(model, batches, epochs=epochs, lr=lr, weight_decay=weight_decay, warmup_frac=warmup_frac,
                 seed=seed, shuffle=shuffle, max_steps=max_steps, grad_accum=grad_accum, accelerator=accelerator)
    if resume is not None:
        loop.resume(resume)
    device = loop.device
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        loop.restore_rng(resume)
        loop.runner.train()
        try:
            stopped = loop.run(loss_fn or default_loss, max_grad_norm=max_grad_norm, should_stop=should_stop,
                               checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint,
                               progress=progress, start=start)
        except KeyboardInterrupt:
            if not loop.updating and loop.world == 1 and on_checkpoint is not None:
                loop.optimizer.zero_grad(set_to_none=True)
                on_checkpoint(loop.state())
            raise
        finally:
            loop.runner.eval()
            loop.optimizer.zero_grad(set_to_none=True)
    return _summary(loop, stopped, time.perf_counter() - start)


def _report_step(progress: Progress | None, loop: _Loop, epoch: int) -> None:
    if progress is None:
        return
    recent = loop.losses[-20:]  # the remaining time is the progress consumer's (one estimate, `eta_text`)
    report(progress, loop.step / loop.total, f"epoch {epoch + 1}/{loop.epochs} step {loop.step}/{loop.total} "
                                             f"loss {sum(recent) / len(recent):.3f}")


def _summary(loop: _Loop, stopped: bool, seconds: float) -> dict:
    losses = loop.losses
    tail = losses[-max(1, math.ceil(len(losses) / 10)):] if losses else [float("nan")]
    return {"steps": loop.step, "start_step": loop.start_step, "epochs": loop.epochs, "losses": losses,
            "mean_loss": sum(losses) / len(losses) if losses else float("nan"),
            "final_loss": sum(tail) / len(tail), "seconds": seconds, "stopped": stopped}
