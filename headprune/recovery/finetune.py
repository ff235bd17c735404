"""Recovery fine-tuning of a physically pruned model, with knowledge distillation from the dense model.

Pruning usually costs accuracy; a short fine-tune on the task's training data wins most of it back (Michel et
al. 2019; Voita et al. 2019). `recover` trains a copy of the pruned model (so each step is cheaper than the
dense model's) with the distillation loss of `headprune.recovery.distill`, optionally through LoRA
(`headprune.recovery.lora`), with checkpoints on disk (`headprune.recovery.checkpoints`), resuming, and
data-parallel runs through Accelerate: under `torchrun` / `accelerate launch` the same call trains with DDP
and only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..core import distributed
from ..core.errors import UserError
from ..core.progress import Progress, report, weighted
from ..core.records import Record
from ..evaluation.loop import evaluate
from ..model.intervene import inference_view, private_copy
from ..model.layout import kept_mask, parameter_count, task_of
from ..sources.batches import count_examples
from .checkpoints import checkpoints, load_checkpoint, save_checkpoint
from .distill import distillation_loss_fn
from .lora import with_lora
from .train import train


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune; what a resumed run must share with the run it continues (`record`).

    distill: distil from the dense model (α = `alpha` is the distillation share of the loss, T = `temperature`).
    lora: train rank-`lora_rank` adapters on the blocks' linear layers instead of all weights (merged at the end).
    One step = `grad_accum` batches per process; `max_steps` overrides `epochs`; `lr` is the peak learning rate.
    """

    distill: bool = True
    temperature: float = 2.0
    alpha: float = 0.5
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 5e-5
    lora: bool = False
    lora_rank: int = 8
    grad_accum: int = 1
    seed: int = 0

    def check(self) -> None:
        if self.lora and self.lora_rank < 1:
            raise UserError(f"the LoRA rank must be ≥ 1, got {self.lora_rank}", option="lora_rank")
        if not (self.lr > 0 and self.lr < float("inf")):
            raise UserError(f"the learning rate must be a positive number, got {self.lr}", option="lr")

    def record(self, *, world_size: int, train_batches: int, heads: list) -> dict:
        """The settings as saved in checkpoints (options that do not apply are None)."""
        out = dataclasses.asdict(self)
        out.update(temperature=self.temperature if self.distill else None, alpha=self.alpha if self.distill else None,
                   lora_rank=self.lora_rank if self.lora else None, world_size=world_size,
                   train_batches=train_batches, heads=heads)
        return out


@dataclass(frozen=True)
class FinetuneReport(Record):
    """What a recovery fine-tune did. `before` / `after` / `dense` map "val" / "test" to `Evaluation`s
    (`dense` only with a teacher; `after` empty when stopped). Seconds are wall time."""

    steps: int
    start_step: int
    epochs: int
    losses: list
    mean_loss: float
    final_loss: float
    train_seconds: float
    stopped: bool
    resumed_from: str | None
    checkpoint: str | None
    settings: dict
    heads_kept: int
    parameters: int
    world_size: int
    seconds: float
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    dense: dict = field(default_factory=dict)


def _evaluations(model, named: list[tuple[str, list]], task: str, progress: Progress | None, what: str) -> dict:
    out = {}
    for (split, batches), part in zip(named, weighted(progress, [count_examples(b) for _, b in named])):
        report(part, 0.0, f"evaluating {what} on {split}")
        out[split] = evaluate(model, batches, task=task, progress=part)
    return out


def _progress_parts(progress: Progress | None, named: list, train_batches: list, settings: FinetuneSettings,
                    teacher: bool) -> list:
    """Progress sub-ranges (before, dense, training, after) sized by their expected cost in example-forwards: an
    evaluation is one per example; a training step about 3 per example (forward and backward), plus one for the
    teacher when distilling. So the fraction grows about linearly in time."""
    evaluated = sum(count_examples(b) for _, b in named)
    steps = settings.max_steps or settings.epochs * -(-len(train_batches) // settings.grad_accum)
    per_step = settings.grad_accum * count_examples(train_batches) / len(train_batches)
    training = steps * per_step * (3 + (1 if settings.distill else 0))
    return weighted(progress, [evaluated, evaluated if teacher else 0, training, evaluated])


def recover(model: torch.nn.Module, train_batches, settings: FinetuneSettings | None = None, *,
            teacher: torch.nn.Module | None = None, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int | None = None, resume: bool = False, should_stop: Callable[[], bool] | None = None,
            progress: Progress | None = None, val_batches=None, test_batches=None,
            **overrides) -> tuple[torch.nn.Module, FinetuneReport]:
    """Fine-tune a copy of the pruned `model` on `train_batches`; returns (trained copy, report).

    model: the physically pruned model (`headprune.prune(dense, keep)`); it is not modified.
    settings: a `FinetuneSettings` (or its fields as keyword `overrides`). teacher: the dense model for
    distillation (needed when distilling; never modified or switched: it runs through an eval-mode view).
    `checkpoint_every` N steps (and on `should_stop()` or Ctrl-C) a checkpoint goes to `checkpoint_dir`;
    `resume=True` continues from the newest one there (same settings required; none there = a fresh start)
    and ends with the same weights as an uninterrupted run. `should_stop()` is asked before every step: True
    saves a checkpoint and returns at once with `report.stopped` (no evaluation after).
    """
    settings = dataclasses.replace(settings or FinetuneSettings(), **overrides)
    settings.check()
    started = time.perf_counter()
    train_batches = list(train_batches)
    if not train_batches:
        raise UserError("nothing to fine-tune on: no training batches")
    if settings.distill and teacher is None:
        raise UserError("distillation needs the dense model: pass the unpruned model as teacher, or turn "
                        "distillation off", option="teacher")
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise UserError("checkpoints and resuming need a checkpoint folder", option="checkpoint_dir")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise UserError(f"checkpoint_every must be ≥ 1, got {checkpoint_every}", option="checkpoint_every")
    accelerator = distributed.accelerator()
    progress = progress if accelerator.is_main_process else None
    device, task = accelerator.device, task_of(model)
    student = private_copy(model).to(device)
    for param in student.parameters():  # heads pruned to nothing leave empty tensors: nothing to train, and
        param.requires_grad_(param.numel() > 0)  # DDP must not wait for their (absent) gradients
    named = [(split, batches) for split, batches in (("val", val_batches), ("test", test_batches)) if batches]
    at_before, at_dense, at_train, at_after = _progress_parts(progress, named, train_batches, settings,
                                                              teacher is not None and settings.distill)
    before = _evaluations(student, named, task, at_before, "before")
    with _teacher(teacher, settings, device) as teacher_view:
        dense = _evaluations(teacher_view, named, task, at_dense, "dense") if teacher_view is not None else {}
        record = settings.record(world_size=accelerator.num_processes, train_batches=len(train_batches),
                                 heads=kept_mask(model).int().tolist())
        trainee = with_lora(student, settings.lora_rank) if settings.lora else student
        resume_state, resumed_from = _resume(checkpoint_dir, trainee, record, settings, resume, at_train)
        saved: list[Path] = []

        def on_checkpoint(state: dict) -> None:
            adapter = None
            if settings.lora:
                from peft import get_peft_model_state_dict

                adapter = get_peft_model_state_dict(trainee)
            saved.append(save_checkpoint(Path(checkpoint_dir), state, student, record, adapter))

        loss_fn = distillation_loss_fn(teacher_view, task=task, temperature=settings.temperature,
                                       alpha=settings.alpha) if teacher_view is not None else None
        summary = train(trainee, train_batches, epochs=settings.epochs, lr=settings.lr, seed=settings.seed,
                        loss_fn=loss_fn, max_steps=settings.max_steps, grad_accum=settings.grad_accum,
                        should_stop=should_stop, checkpoint_every=checkpoint_every,
                        on_checkpoint=on_checkpoint if checkpoint_dir is not None else None, resume=resume_state,
                        accelerator=accelerator, progress=at_train)
    accelerator.free_memory()  # drop Accelerate's references to the wrapped model
    if settings.lora:
        student = trainee.merge_and_unload()
    after = {} if summary["stopped"] else _evaluations(student, named, task, at_after, "after")
    return student.eval(), FinetuneReport(
        steps=summary["steps"], start_step=summary["start_step"], epochs=summary["epochs"], losses=summary["losses"],
        mean_loss=summary["mean_loss"], final_loss=summary["final_loss"], train_seconds=summary["seconds"],
        stopped=summary["stopped"], resumed_from=str(resumed_from) if resumed_from else None,
        checkpoint=str(saved[-1]) if saved else None, settings={k: v for k, v in record.items() if k != "heads"},
        heads_kept=int(kept_mask(student).sum()), parameters=parameter_count(student),
        world_size=accelerator.num_processes, seconds=time.perf_counter() - started,
        before=before, after=after, dense=dense)


@contextlib.contextmanager
def _teacher(teacher, settings: FinetuneSettings, device: torch.device) -> Iterator[torch.nn.Module | None]:
    """The teacher as the loss sees it: on the training device (a private copy if it lives elsewhere) and in
    eval mode through `inference_view` (the caller's model is never moved or switched); None without
    distillation."""
    if teacher is None or not settings.distill:
        yield None
        return
    first = next(teacher.parameters(), None)
    if first is not None and first.device != device:
        teacher = private_copy(teacher).to(device).eval()
    with inference_view(teacher) as view:
        yield view


def _resume(checkpoint_dir, trainee, record: dict, settings: FinetuneSettings, resume: bool,
            progress: Progress | None):
    """(training state, checkpoint path) of the newest checkpoint when resuming, else (None, None)."""
    if not resume:
        return None, None
    found = checkpoints(checkpoint_dir)
    if not found:
        return None, None
    state = load_checkpoint(found[-1], trainee, record, settings.lora)
    report(progress, 0.0, f"resuming from {found[-1].name}")
    return state, found[-1]
