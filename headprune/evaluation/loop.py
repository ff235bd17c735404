"""The evaluation loop: metrics of a model (optionally under a mask) over batches."""
from __future__ import annotations

import contextlib
import time

import torch

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..model.forward import model_device, model_inputs, to_device
from ..model.intervene import inference_view, masked
from ..model.layout import task_of
from .examples import ExampleOutputs, example_outputs
from .metrics import Evaluation, accumulate, batch_metrics, finalise


def evaluate(model, batches, keep: torch.Tensor | None = None, *, task: str | None = None,
             progress: Progress | None = None) -> Evaluation:
    """Evaluate `model` on `batches` (from `make_batches`); with `keep`, under `masked(model, keep)`.

    Returns an `Evaluation` (loss, n, seconds and the task's metrics). Runs under `torch.inference_mode()` in
    eval mode; a model in training mode is evaluated through an eval-mode twin, never switched.
    """
    return _run(model, batches, keep, task, progress, examples=False)[0]


def evaluate_examples(model, batches, keep: torch.Tensor | None = None, *, task: str | None = None,
                      progress: Progress | None = None) -> tuple[Evaluation, ExampleOutputs]:
    """`evaluate`, and the per-example outputs of the same pass (in batch order)."""
    evaluation, total = _run(model, batches, keep, task, progress, examples=True)
    return evaluation, example_outputs(total)


def _run(model, batches, keep, task, progress, *, examples: bool) -> tuple[Evaluation, dict]:
    task = task or task_of(model)
    batches = list(batches)
    if not batches:
        raise UserError("nothing to evaluate: no batches")
    start = time.perf_counter()
    device = model_device(model)
    total = None
    with masked(model, keep) if keep is not None else contextlib.nullcontext(), inference_view(model) as runner, \
            torch.inference_mode():
        for i, batch in enumerate(batches):
            if "labels" not in batch:
                raise UserError("the batches have no labels: make them with make_batches on labelled data")
            batch = to_device(batch, device)
            logits = runner(**model_inputs(runner, batch)).logits
            labels = batch["labels"]
            total = accumulate(total, batch_metrics(logits, labels, task, examples=examples))
            report(progress, (i + 1) / len(batches), f"evaluated {total['n']} examples")
    return finalise(total).replace(seconds=time.perf_counter() - start), total
