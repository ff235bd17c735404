"""model.forward: devices, the inputs a forward pass takes, real tokens, logits without caches, the backbone alone."""
from __future__ import annotations

import pytest
import torch
from helpers.masks import token_logits
from torch import nn

from headprune.model.forward import (
    forward_backbone,
    forward_logits,
    model_device,
    model_inputs,
    real_tokens,
    to_device,
)
from headprune.model.tiny import tiny_batch, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_model_device_and_to_device():
    assert model_device(tiny_model("bert", num_hidden_layers=1)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "texts": ["a", "b"], "n": 2}
    moved = to_device(batch, torch.device("meta"))
    assert moved["input_ids"].device.type == "meta" and moved["input_ids"].shape == (2, 3)
    assert moved["texts"] is batch["texts"] and moved["n"] == 2 and batch["input_ids"].device.type == "cpu"


@pytest.mark.parametrize("family, causal", [("bert", False), ("gpt2", True), ("llama", True)])
def test_model_inputs_drop_labels_and_turn_off_the_cache_of_decoders(family, causal):
    model = tiny_model(family, num_hidden_layers=1)
    batch = tiny_batch(model)
    inputs = model_inputs(model, batch)
    assert "labels" not in inputs and "labels" in batch  # the batch itself is untouched
    assert set(inputs) == {"input_ids", "attention_mask"} | ({"use_cache"} if causal else set())
    if causal:
        assert inputs["use_cache"] is False
        plain = {k: v for k, v in inputs.items() if k != "use_cache"}
        assert set(model(**plain).keys()) == {"logits", "cache"} and set(model(**inputs).keys()) == {"logits"}


def test_real_tokens_follow_the_attention_mask():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert real_tokens({"input_ids": torch.zeros(2, 3), "attention_mask": mask}).tolist() == [[True, True, False],
                                                                                               [True, False, False]]
    tokens = real_tokens({"input_ids": torch.zeros(2, 3, dtype=torch.long)})
    assert tokens.dtype == torch.bool and tokens.shape == (2, 3) and tokens.all()


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_forward_logits_are_the_models_own_logits(family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    with torch.no_grad():
        got = forward_logits(model, batch)
    torch.testing.assert_close(got, token_logits(model, batch))
    assert got.shape[0] == batch["input_ids"].shape[0]


def test_forward_backbone_runs_the_blocks_but_not_the_task_head():
    model = tiny_model("gpt2")
    seen = []
    hooks = [model.transformer.h[-1].register_forward_hook(lambda *a: seen.append("block")),
             model.lm_head.register_forward_hook(lambda *a: seen.append("head"))]
    try:
        with torch.no_grad():
            assert forward_backbone(model, tiny_batch(model)) is None
        assert seen == ["block"]
        seen.clear()
        with torch.no_grad():
            forward_logits(model, tiny_batch(model))
        assert seen == ["block", "head"]
    finally:
        for hook in hooks:
            hook.remove()
