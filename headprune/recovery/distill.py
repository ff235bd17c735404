"""Knowledge distillation (Hinton, Vinyals, Dean 2015, *Distilling the Knowledge in a Neural Network*):

    L = (1 − α) · L_task + α · T² · KL(softmax(z_teacher / T) ‖ softmax(z_student / T)),

the T² keeping the gradient scale independent of T, the KL taken per example for classifiers and per predicted
token for language models.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import UserError
from ..core.types import IGNORE_INDEX
from ..model.forward import forward_logits


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    task: str, temperature: float) -> torch.Tensor:
    """T² · KL(p_teacher ‖ p_student) at temperature T, averaged over examples (classifier) or predicted tokens.

    classification: logits (B, C). causal-lm: logits (B, T, V), position t predicts token t+1, counted where
    labels[:, t+1] ≠ -100. masked-lm: logits (B, T, V), counted where labels ≠ -100.
    """
    if task == "causal-lm":
        student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    if task != "classification":
        where = labels.reshape(-1) != IGNORE_INDEX  # (B*T,)
        student_logits = student_logits.reshape(-1, student_logits.shape[-1])[where]  # (N, V)
        teacher_logits = teacher_logits.reshape(-1, teacher_logits.shape[-1])[where]  # (N, V)
        if student_logits.shape[0] == 0:
            return student_logits.sum() * 0.0
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature ** 2


def distillation_loss_fn(teacher: torch.nn.Module, *, task: str, temperature: float = 2.0, alpha: float = 0.5):
    """A `loss_fn(model, batch)` for `headprune.recovery.train.train`: (1 − α)·task loss + α·T²·KL to `teacher`."""
    if temperature <= 0:
        raise UserError(f"the distillation temperature must be > 0, got {temperature}", option="temperature")
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha (the distillation share of the loss) must lie in [0, 1], got {alpha}", option="alpha")

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        out = model(**batch)
        with torch.no_grad():
            teacher_logits = forward_logits(teacher, batch)
        kd = distillation_kl(out.logits, teacher_logits, batch["labels"], task, temperature)
        return (1.0 - alpha) * out.loss + alpha * kd if alpha < 1.0 else kd

    return loss_fn

