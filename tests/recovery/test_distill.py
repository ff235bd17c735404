"""The distillation loss (headprune.recovery.distill) counts only the tokens a language model predicts."""
from __future__ import annotations

import pytest
import torch

from headprune.recovery.distill import distillation_kl


def test_distillation_kl_counts_only_predicted_tokens():
    student = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, -100, -100], [1, 2, 3, 4, 5]])
    assert float(distillation_kl(student, student.clone(), labels, "causal-lm", 2.0)) == pytest.approx(0.0, abs=1e-6)
    teacher = student.clone()
    teacher[0, 2:, 0] += 5.0  # positions 2-4 of row 0 predict ignored tokens (or nothing): no effect
    assert float(distillation_kl(student, teacher, labels, "causal-lm", 2.0)) == pytest.approx(0.0, abs=1e-6)
    teacher[1, 0, 0] += 5.0
    assert float(distillation_kl(student, teacher, labels, "causal-lm", 2.0)) > 0.01
