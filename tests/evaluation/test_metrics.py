"""Metrics as pure functions (headprune.evaluation.metrics), checked by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from headprune.evaluation.metrics import accumulate, batch_metrics, finalise, macro_f1


def test_classification_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2, 2])  # predictions 0, 1, 2, 0, 1: right, right, wrong, wrong, wrong
    total = accumulate(accumulate(None, batch_metrics(logits[:2], labels[:2], "classification")),
                       batch_metrics(logits[2:], labels[2:], "classification"))
    out = finalise(total)
    assert out["n"] == 5 and out["accuracy"] == pytest.approx(2 / 5)
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    # per class F1 = 2TP / (2TP + FP + FN): class 0: TP1 FP1 FN0 → 2/3; class 1: TP1 FP1 FN1 → 1/2; class 2: 0
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # a class absent from labels and predictions does not count
    assert macro_f1(torch.tensor([[3, 0, 0], [0, 1, 0], [0, 0, 0]])) == pytest.approx(1.0)


def test_causal_lm_metrics_shift_and_ignore_padding():
    vocab = 5
    labels = torch.tensor([[1, 2, 3, -100]])  # last position is padding
    logits = torch.full((1, 4, vocab), -10.0)
    logits[0, 0, 2] = 10.0  # predicts token 2 after token 1: right
    logits[0, 1, 4] = 10.0  # predicts 4, truth 3: wrong
    logits[0, 2, 0] = 10.0  # predicts for the padding: ignored
    out = finalise(batch_metrics(logits, labels, "causal-lm"))
    assert out["tokens"] == 2 and out["next_token_accuracy"] == pytest.approx(0.5) and out["accuracy"] == out["next_token_accuracy"]
    expected = F.cross_entropy(logits[0, :2], torch.tensor([2, 3]))
    assert out["loss"] == pytest.approx(float(expected))
    assert out["perplexity"] == pytest.approx(math.exp(float(expected)))
    masked = finalise(batch_metrics(logits, torch.tensor([[-100, 4, -100, -100]]), "masked-lm"))
    assert masked["tokens"] == 1 and masked["accuracy"] == 1.0


def test_metrics_refuse_bad_inputs():
    with pytest.raises(ValueError, match="0..2"):
        batch_metrics(torch.zeros(2, 3), torch.tensor([0, 3]), "classification")
    with pytest.raises(ValueError, match="no examples"):
        finalise(None)
    with pytest.raises(ValueError, match="cannot add"):
        accumulate(batch_metrics(torch.zeros(1, 2), torch.tensor([0]), "classification"),
                   batch_metrics(torch.zeros(1, 2, 3), torch.tensor([[0, 1]]), "causal-lm"))
