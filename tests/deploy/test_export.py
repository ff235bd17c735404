"""ONNX export of every encoder family and task, uneven heads and empty layers included, checked in ONNX
Runtime against the masked dense model."""
from __future__ import annotations

import pytest
from onnx_parity import check_export


@pytest.mark.parametrize("family,task,rows", [
    ("bert", "masked-lm", [[], [1, 2, 3]]),
    ("roberta", "classification", [[0, 1, 2, 3], [2]]),
    ("electra", "classification", [[1, 2], []]),
    ("distilbert", "masked-lm", [[3], [0, 1]]),
])
def test_encoder_export_matches_masked_model(tmp_path, family, task, rows):
    check_export(tmp_path, family, task, rows)
