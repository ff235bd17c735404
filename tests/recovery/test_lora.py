"""recovery.lora: targets are the blocks' non-empty linear layers; the wrapped model starts equal and merges exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lora import LORA_ALPHA_PER_RANK, lora_targets, with_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def token_logits(model, batch):
    """Logits from token ids and attention mask (any wrapper: peft's PeftModel too), no gradients."""
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def block_linears(model, blocks):
    """Full names of nn.Linear / Conv1D modules under `blocks` (a ModuleList path) with any weights."""
    return [name for name, module in model.named_modules() if name.startswith(blocks + ".")
            and isinstance(module, (nn.Linear, Conv1D)) and module.weight.numel() > 0]


def test_targets_are_the_blocks_linear_layers_only():
    bert, gpt2 = tiny_model("bert"), tiny_model("gpt2")
    assert lora_targets(bert) == block_linears(bert, "bert.encoder.layer") and len(lora_targets(bert)) == 3 * 6
    assert not any("classifier" in n or "pooler" in n for n in lora_targets(bert))
    assert lora_targets(gpt2) == block_linears(gpt2, "transformer.h") and len(lora_targets(gpt2)) == 3 * 4
    assert "lm_head" not in lora_targets(gpt2)


def test_a_layer_without_heads_offers_only_its_feed_forward():
    model = tiny_model("bert")
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1] = False
    layer1 = [n for n in lora_targets(prune(model, keep)) if n.startswith("bert.encoder.layer.1.")]
    assert layer1 == ["bert.encoder.layer.1.intermediate.dense", "bert.encoder.layer.1.output.dense"]


def test_a_classifier_trains_its_head_in_full_and_adapters_start_at_zero():
    model = tiny_model("bert")
    batch = tiny_batch(model)
    before = token_logits(model, batch)
    wrapped = with_lora(model, 2)
    config = wrapped.peft_config["default"]
    assert config.r == 2 and config.lora_alpha == LORA_ALPHA_PER_RANK * 2 and config.lora_dropout == 0.0
    assert not config.fan_in_fan_out and set(config.target_modules) == set(lora_targets(tiny_model("bert")))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert all("lora_" in n or ".classifier." in n for n in trainable)
    assert any(".classifier." in n for n in trainable) and not any("pooler" in n for n in trainable)
    assert sum("lora_A" in n for n in trainable) == 18
    torch.testing.assert_close(token_logits(wrapped, batch), before)  # B = 0: the adapters change nothing yet


def test_conv1d_adapters_merge_into_the_same_function():
    model = tiny_model("gpt2")
    wrapped = with_lora(model, 4)
    assert wrapped.peft_config["default"].fan_in_fan_out  # GPT-2's Conv1D stores (in, out)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    batch = tiny_batch(model)
    adapted = token_logits(wrapped, batch)
    assert not torch.allclose(adapted, token_logits(tiny_model("gpt2"), batch), atol=1e-3)
    merged = wrapped.merge_and_unload()
    assert isinstance(merged.transformer.h[0].attn.c_attn, Conv1D)
    torch.testing.assert_close(token_logits(merged, batch), adapted, rtol=1e-4, atol=1e-4)
