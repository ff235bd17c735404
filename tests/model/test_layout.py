"""model.layout: head counts, groups, blocks and projections from the config, and what a pruned model stores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.pytorch_utils import Conv1D

from headprune.core.errors import UserError
from headprune.model import layout
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_counts_and_modules_come_from_the_config(family):
    model = tiny_model(family)
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", n_heads)
    dh = config.hidden_size // n_heads
    assert layout.head_grid(model) == (n_layers, n_heads) and layout.num_kv_heads(model) == n_kv
    assert layout.head_dim(model) == dh and layout.kv_group_size(model) == n_heads // n_kv
    assert layout.is_gqa(model) == (family == "llama")
    assert layout.kv_group_of(model) == [h // (n_heads // n_kv) for h in range(n_heads)]
    assert len(layout.blocks(model)) == n_layers and not layout.is_pruned(model)
    assert layout.present_heads(model) == [list(range(n_heads))] * n_layers
    assert layout.present_kv_heads(model) == [list(range(n_kv))] * n_layers
    assert layout.kept_mask(model).all() and layout.kept_mask(model).shape == (n_layers, n_heads)
    for block, out in zip(layout.blocks(model), layout.out_projections(model)):
        assert any(m is out for m in block.modules())
        in_features = out.weight.shape[0] if isinstance(out, Conv1D) else out.in_features
        assert in_features == n_heads * dh
    assert len(layout.attention_modules(model)) == n_layers


def test_llama_groups_are_three_query_heads_per_kv_head():
    model = tiny_model("llama")
    assert layout.head_grid(model) == (3, 6) and layout.kv_group_of(model) == [0, 0, 0, 1, 1, 1]


def test_task_of_reads_the_class_name_and_refuses_a_bare_backbone():
    assert layout.task_of(tiny_model("bert", num_hidden_layers=1)) == "classification"
    assert layout.task_of(tiny_model("gpt2", num_hidden_layers=1)) == "causal-lm"
    assert layout.task_of(tiny_model("bert", "masked-lm", num_hidden_layers=1)) == "masked-lm"
    backbone = tiny_model("bert", num_hidden_layers=1).base_model
    with pytest.raises(UserError, match="BertModel has no task headprune can evaluate"):
        layout.task_of(backbone)


def test_a_pruned_model_names_its_heads_by_original_index_and_counts_its_parameters():
    model = tiny_model("bert")
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0, 1] = keep[2, 0] = keep[2, 3] = False
    pruned = prune(model, keep)
    assert layout.is_pruned(pruned) and layout.head_grid(pruned) == (3, 4)
    assert layout.present_heads(pruned) == [[0, 2, 3], [0, 1, 2, 3], [1, 2]]
    assert torch.equal(layout.kept_mask(pruned), keep)
    # one BERT head: dh rows (+ dh biases) of q, k and v, and dh input columns of the output projection
    d, dh = model.config.hidden_size, layout.head_dim(model)
    per_head = 3 * (d * dh + dh) + d * dh
    assert layout.parameter_count(model) - layout.parameter_count(pruned) == 3 * per_head


def test_tied_weights_are_counted_once():
    model = tiny_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    every_tensor = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert layout.parameter_count(model) == every_tensor - model.lm_head.weight.numel()


def test_max_positions_is_what_the_embeddings_can_index():
    roberta = tiny_model("roberta", max_position_embeddings=20)  # positions start after the padding id (1)
    limit = layout.max_positions(roberta)
    assert limit == layout.max_positions(roberta.config) == 20 - 2
    with torch.no_grad():
        roberta(input_ids=torch.full((1, limit), 5))
        with pytest.raises((IndexError, RuntimeError)):  # one position past the table
            roberta(input_ids=torch.full((1, limit + 1), 5))
    assert layout.max_positions(tiny_model("gpt2", num_hidden_layers=1)) == 64
    assert layout.max_positions(tiny_model("llama", num_hidden_layers=1)) is None  # rotary: no hard limit


def test_to_keep_tensor_accepts_masks_and_explains_bad_ones():
    model = tiny_model("bert", num_hidden_layers=2)
    assert layout.to_keep_tensor(None, model).tolist() == [[True] * 4] * 2
    rows = [[1, 0, 1, 1], [0, 0, 0, 1]]
    expected = torch.tensor(rows, dtype=torch.bool)
    for given in (rows, np.array(rows), np.array(rows, dtype=bool), torch.tensor(rows)):
        got = layout.to_keep_tensor(given, model)
        assert got.dtype == torch.bool and torch.equal(got, expected)
    array = np.array(rows, dtype=bool)
    layout.to_keep_tensor(array, model)[0, 0] = False
    assert array[0, 0]  # the caller's array is not shared
    with pytest.raises(UserError, match=r"keep mask has shape \(4,\), expected \(num_layers, num_heads\) = \(2, 4\)"):
        layout.to_keep_tensor([1, 1, 1, 1], model)
    with pytest.raises(UserError, match="must hold booleans \\(True = keep\\), got dtype torch.float32"):
        layout.to_keep_tensor(torch.ones(2, 4), model)
    with pytest.raises(UserError, match="booleans or 0/1 values"):
        layout.to_keep_tensor([[1, 2, 1, 1], [1, 1, 1, 1]], model)
    with pytest.raises(UserError, match="keep mask must be a bool array of shape \\(2, 4\\)"):
        layout.to_keep_tensor([[1, 1], [1]], model)
