"""Family adapters (headprune.model.adapters): an architecture without one is refused, naming those supported."""
from __future__ import annotations

import pytest

import headprune


def test_unsupported_architecture_names_supported_families():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, num_heads=2, num_layers=1, d_ff=8))
    with pytest.raises(headprune.UnsupportedModelError, match="supports bert, roberta"):
        headprune.head_grid(model)
