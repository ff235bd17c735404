"""Metrics as pure functions over logits and labels, and the typed result every evaluator returns.

The arithmetic lives in `batch_metrics` (sums for one batch), `accumulate` (adds sums) and `finalise`
(sums → `Evaluation`), so any evaluator that computes logits its own way (the live evaluator re-runs only the
layers a mask change touched) reports exactly the same numbers as `evaluate`.

Metrics: classification → `loss` (mean cross-entropy per example), `accuracy`, `macro_f1` (mean over the
classes that occur in labels or predictions, as scikit-learn's `f1_score(average="macro")`); causal / masked
LM → `loss` (mean per predicted token), `perplexity` = exp(loss), `next_token_accuracy` (masked LM: accuracy
on the masked tokens), also under `accuracy`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..core.records import Record
from ..core.types import IGNORE_INDEX, Task


@dataclass(frozen=True)
class Evaluation(Record):
    """Metrics of one evaluation. Also a read-only mapping (`result["accuracy"]`, `"macro_f1" in result`,
    `dict(result)`) of the metrics that apply to the task, with `next_token_accuracy` for language models.

    accuracy: classification accuracy, or next-token / masked-token accuracy for language models.
    tokens: predicted tokens (language models). seconds: wall time. rerun_from_layer: the first layer a live
    evaluation re-ran (None: nothing changed or not a live evaluation).
    """

    task: Task
    n: int
    loss: float
    accuracy: float
    macro_f1: float | None = None
    perplexity: float | None = None
    tokens: int | None = None
    seconds: float | None = None
    rerun_from_layer: int | None = None

    def _keys(self) -> list[str]:
        always = ("seconds", "rerun_from_layer")  # the metrics that do not apply to the task are left out
        keys = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None or f.name in always]
        return keys + (["next_token_accuracy"] if self.task != "classification" else [])

    def __getitem__(self, key: str):
        if key == "next_token_accuracy" and self.task != "classification":
            return self.accuracy
        return super().__getitem__(key)


def batch_metrics(logits: torch.Tensor, labels: torch.Tensor, task: str, *, examples: bool = False) -> dict:
    """Sums for one batch: `n` examples, `count` scored items, `loss_sum`, `correct`, and `confusion` (classification).

    classification: logits (B, C), labels (B,). causal-lm: logits (B, T, V), labels (B, T) — position t
    predicts token t+1 (the shift is done here). masked-lm: logits (B, T, V), labels (B, T), -100 = ignore.
    `examples`: also `examples`, a list holding this batch's per-example outputs (`_example_piece`), from the
    same losses (no second pass), for `headprune.evaluation.examples.example_outputs`.
    """
    logits = logits.detach().float()
    labels = labels.detach().to(logits.device)
    if task == "classification":
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise UserError(f"classification logits must be (B, C) matching labels (B,); got {tuple(logits.shape)} "
                            f"and {tuple(labels.shape)}")
        classes = logits.shape[-1]
        if classes < 2:
            raise UserError("a classifier with a single output (regression) is not supported; it needs ≥ 2 labels")
        if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
            raise UserError(f"label ids must lie in 0..{classes - 1} for a model with {classes} labels")
        losses = F.cross_entropy(logits, labels, reduction="none")  # (B,)
        pred = logits.argmax(dim=-1)  # (B,)
        confusion = torch.bincount(labels * classes + pred, minlength=classes * classes).reshape(classes, classes)
        out = {"task": task, "n": int(labels.shape[0]), "count": int(labels.shape[0]), "loss_sum": float(losses.sum()),
               "correct": int((pred == labels).sum()), "confusion": confusion.cpu()}
        if examples:
            gold = logits.softmax(-1).gather(1, labels[:, None])[:, 0]  # (B,) probability of the gold label
            out["examples"] = [{"loss": losses.cpu(), "label": labels.cpu(), "prediction": pred.cpu(),
                                "gold_prob": gold.cpu()}]
        return out
    if task not in ("causal-lm", "masked-lm"):
        raise UserError(f"unknown task {task!r}")
    n = int(labels.shape[0])
    if task == "causal-lm":
        logits, labels = logits[:, :-1, :], labels[:, 1:]  # (B, T-1, V), (B, T-1)
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    flat_labels = labels.reshape(-1)  # (B*T,)
    scored = flat_labels != IGNORE_INDEX
    picked, gold = flat_logits[scored], flat_labels[scored]  # (items, V), (items,)
    token_loss = F.cross_entropy(picked, gold, reduction="none")  # (items,)
    count = int(token_loss.numel())
    correct = int((picked.argmax(dim=-1) == gold).sum())
    out = {"task": task, "n": n, "count": count, "loss_sum": float(token_loss.sum()), "correct": correct}
    if examples:
        out["examples"] = [_lm_piece(token_loss, scored.view(labels.shape), causal=task == "causal-lm")]
    return out


def _lm_piece(token_loss: torch.Tensor, scored: torch.Tensor, *, causal: bool) -> dict:
    """Per-example outputs of a language-model batch: `loss` (B,) mean over the example's scored tokens (0
    without any), `token_logprob` (B, T) log-probability of the gold token at each input position (causal:
    token t given tokens < t, so position 0 is NaN; NaN where nothing is scored)."""
    logprob = torch.full(scored.shape, float("nan"), device=token_loss.device)  # (B, T') shifted for causal
    logprob[scored] = -token_loss
    items = scored.sum(-1)  # (B,)
    loss = -logprob.nan_to_num(0.0).sum(-1) / items.clamp(min=1)
    if causal:
        logprob = torch.cat([logprob.new_full((logprob.shape[0], 1), float("nan")), logprob], dim=1)  # (B, T)
    return {"loss": loss.cpu(), "token_logprob": logprob.cpu()}


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable per-example loss (B,) and the number of scored items per example (B,).

    classification: cross-entropy of each example (1 item). Language models: mean cross-entropy over the
    example's predicted tokens (causal: position t predicts t+1; -100 labels ignored); 0 with 0 items.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if task == "classification":
        return F.cross_entropy(logits, labels, reduction="none"), torch.ones(labels.shape[0])
    if task == "causal-lm":
        logits, labels = logits[:, :-1], labels[:, 1:]  # (B, T-1, V), (B, T-1)
    tokens = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=IGNORE_INDEX)  # (B, T)
    count = (labels != IGNORE_INDEX).sum(-1)  # (B,)
    return tokens.sum(-1) / count.clamp(min=1), count.float()


def accumulate(total: dict | None, part: dict) -> dict:
    """Add the sums of `part` (from `batch_metrics`) to `total` (None starts a new one); returns the total."""
    if total is None:
        total = dict(part)
        if "confusion" in part:
            total["confusion"] = part["confusion"].clone()
        return total
    if total["task"] != part["task"]:
        raise UserError(f"cannot add {part['task']} metrics to {total['task']} metrics")
    for key in ("n", "count", "loss_sum", "correct"):
        total[key] += part[key]
    if "examples" in part:
        total["examples"] = total["examples"] + part["examples"]
    if "confusion" in part:
        total["confusion"] = total["confusion"] + part["confusion"]
    return total


def macro_f1(confusion: torch.Tensor) -> float:
    """Macro-F1 from a (true, predicted) confusion matrix, over classes seen in labels or predictions."""
    confusion = confusion.to(torch.float64)
    tp = confusion.diagonal()
    support = confusion.sum(dim=1)
    predicted = confusion.sum(dim=0)
    present = (support + predicted) > 0
    if not present.any():
        return float("nan")
    f1 = 2 * tp / (support + predicted).clamp(min=1)  # 2TP / (2TP + FP + FN)
    return float(f1[present].mean())


def finalise(total: dict | None) -> Evaluation:
    """Metrics from accumulated sums."""
    if total is None or total["n"] == 0:
        raise UserError("nothing was evaluated: no examples")
    task, count = total["task"], total["count"]
    loss = total["loss_sum"] / count if count else float("nan")
    accuracy = total["correct"] / count if count else float("nan")
    if task == "classification":
        return Evaluation(task=task, n=int(total["n"]), loss=loss, accuracy=accuracy,
                          macro_f1=macro_f1(total["confusion"]))
    return Evaluation(task=task, n=int(total["n"]), loss=loss, accuracy=accuracy, perplexity=_safe_exp(loss),
                      tokens=int(count))


def _safe_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return float("inf")
