"""ONNX export of every decoder family (GPT-2's Conv1D, grouped-query attention with KV copies, empty layers,
whole KV groups), causal LM and classification, checked in ONNX Runtime against the masked dense model; and a
least-squares recovered export."""
from __future__ import annotations

import pytest
from onnx_parity import check_export

from headprune.model.tiny import tiny_batch
from headprune.recovery.lsq import lsq_recover


@pytest.mark.parametrize("family,task,rows", [
    ("gpt2", "causal-lm", [[], [1, 2, 3]]),
    ("llama", "causal-lm", [[0, 1, 3], [3, 4, 5]]),  # groups of 3: 2 + 1 heads -> KV copies
    ("mistral", "classification", [[], [0, 1, 5]]),  # groups of 2; an empty layer
])
def test_decoder_export_matches_masked_model(tmp_path, family, task, rows):
    check_export(tmp_path, family, task, rows)


def test_recovered_export_matches_recovered_model(tmp_path):
    def recover(model, keep):
        return lsq_recover(model, keep, [tiny_batch(model, seed=s) for s in range(4)], method="weights")

    result = check_export(tmp_path, "qwen2", "causal-lm", [[3, 4, 5], [0, 1, 2]], recovery=recover)  # whole groups
    assert result.recovery == {"method": "weights", "target": "local"}
