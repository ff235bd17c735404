"""ONNX Runtime (headprune.deploy.runtime): graph inputs per family, and parity that notices another model."""
from __future__ import annotations

import pytest
import torch
import transformers

import headprune
from headprune.core.errors import UserError
from headprune.deploy import (
    check_parity,
    session,
)
from headprune.deploy.runtime import graph_input_names
from headprune.model.tiny import tiny_batch, tiny_model


def test_graph_inputs_per_family():
    assert graph_input_names(tiny_model("bert")) == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph_input_names(tiny_model("roberta", type_vocab_size=1)) == ["input_ids", "attention_mask"]  # roberta-base
    assert graph_input_names(tiny_model("distilbert")) == ["input_ids", "attention_mask"]
    assert graph_input_names(tiny_model("gpt2")) == ["input_ids", "attention_mask"]
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=16, patch_size=4))
    with pytest.raises(UserError, match="does not take token ids"):
        graph_input_names(vit)


def test_parity_notices_a_different_model(exported):
    model, keep, result = exported
    other = headprune.prune(model, keep)
    with torch.no_grad():
        other.classifier.bias += 1.0
    parity = check_parity(other, session(result.path), [tiny_batch(model)])
    assert not parity.ok and parity.max_abs_diff == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(UserError, match="no batches"):
        check_parity(other, session(result.path), [])
