"""Runtime-safe shapes (headprune.deploy.shapes): 'loads in' verdicts checked by really loading, with their
reasons, and rounding a mask to uniform head counts."""
from __future__ import annotations

import json

import pytest
import torch
import transformers
from helpers.masks import keep_rows as _mask
from helpers.masks import token_logits as _logits

import headprune
from headprune.core.errors import UserError
from headprune.deploy import (
    layer_shapes,
    loads_in,
    round_to_uniform,
    uniform_head_counts,
)
from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model

AUTO = {"classification": transformers.AutoModelForSequenceClassification,
        "causal-lm": transformers.AutoModelForCausalLM}


def _gqa(family="llama"):
    """8 query heads in 4 KV groups of 2, hidden size 64: LlamaConfig accepts 1, 2, 4 and 8 heads only."""
    return tiny_model(family, hidden_size=64, num_attention_heads=8, num_key_value_heads=4)


CASES = {  # name: (model builder, kept heads per layer)
    "bert dense": (lambda: tiny_model("bert"), [[0, 1, 2, 3]] * 3),
    "bert uniform": (lambda: tiny_model("bert"), [[0, 2]] * 3),
    "gpt2 uniform": (lambda: tiny_model("gpt2"), [[1, 3]] * 3),
    "llama whole groups": (_gqa, [[0, 1, 4, 5], [2, 3, 6, 7], [0, 1, 2, 3]]),
    "llama equal partial groups": (_gqa, [[0, 2, 4, 6]] * 3),
    "llama 6 heads (64 % 6)": (_gqa, [[0, 1, 2, 3, 4, 5]] * 3),
    "llama uneven": (_gqa, [[0, 1], [0, 1, 2, 3], [4, 5]]),
    "llama empty layer": (_gqa, [[], [0, 1], [2, 3]]),
    "mistral 6 heads": (lambda: _gqa("mistral"), [[0, 1, 2, 3, 4, 5]] * 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loads_in_verdicts_match_real_loading(tmp_path, case):
    build, rows = CASES[case]
    model = build()
    keep = _mask(model, rows)
    verdicts = loads_in(model, keep)
    pruned = headprune.prune(model, keep)
    gqa = layout.adapter_for(model).gqa  # other families record no KV slots: as many as query heads
    stored = zip(layout.present_heads(pruned), layout.present_kv_heads(pruned) if gqa else layout.present_heads(pruned))
    assert list(verdicts.shapes) == [(len(h), len(kv)) for h, kv in stored]
    assert layer_shapes(model, keep) == list(verdicts.shapes)
    folder = headprune.save_pruned(pruned, tmp_path / "m")
    batch = tiny_batch(model)
    expected = _logits(pruned, batch)
    torch.testing.assert_close(_logits(headprune.load_pruned(folder), batch), expected, atol=1e-5, rtol=1e-5)
    assert verdicts["headprune"].ok
    marker = json.loads((folder / "headprune_pruned.json").read_text())["loads_with_from_pretrained"]
    assert verdicts["transformers"].ok == marker
    try:
        plain = AUTO[layout.task_of(model)].from_pretrained(folder).eval()
        loaded = torch.allclose(_logits(plain, batch), expected, atol=1e-5, rtol=1e-5)
    except Exception:  # noqa: BLE001 - a size mismatch or a config validation error: it does not load
        loaded = False
    assert loaded == verdicts["transformers"].ok, verdicts["transformers"].reason
    whole = all(len(set(kv)) == len(kv) and len(h) == 2 * len(kv) for h, kv in
                zip(layout.present_heads(pruned), layout.present_kv_heads(pruned))) if layout.is_gqa(model) else True
    assert verdicts["fixed-shape"].ok == (loaded and whole)
    assert verdicts["onnxruntime"].ok
    assert verdicts.runtime_safe == (loaded and whole)


def test_verdict_reasons_say_why():
    model = _gqa()
    assert "LlamaConfig" in loads_in(model, _mask(model, [[0, 1, 2, 3, 4, 5]] * 3))["transformers"].reason
    assert "different head counts" in loads_in(model, _mask(model, [[0, 1], [0, 1, 2, 3], [4, 5]]))["transformers"].reason
    assert "keep no heads" in loads_in(model, _mask(model, [[], [0, 1], [2, 3]]))["transformers"].reason
    assert "whole KV groups" in loads_in(model, _mask(model, [[0, 2, 4, 6]] * 3))["fixed-shape"].reason
    assert "no head_dim" in loads_in(tiny_model("bert"), _mask(tiny_model("bert"), [[0]] * 3))["transformers"].reason
    pruned = headprune.prune(model, _mask(model, [[0, 1, 4, 5]] * 3))
    assert loads_in(pruned).runtime_safe  # keep=None: the pruned model as stored
    assert loads_in(pruned).to_dict()["shapes"] == [[4, 2]] * 3


def test_round_to_uniform_keeps_budget_and_nearest_heads():
    model = tiny_model("bert")  # 3 layers x 4 heads
    keep = _mask(model, [[0, 1, 2, 3], [0], [1, 2]])  # mean 7/3 -> 2 per layer
    scores = torch.tensor([[4.0, 3, 2, 1], [1, 2, 3, 4], [9, 1, 0, 0]])
    result = round_to_uniform(keep, scores, model)
    assert result.heads_per_layer == 2 and result.allowed_counts == (1, 2, 3, 4)
    # layer 0 drops its two weakest kept heads; layer 1 adds its best unkept head; layer 2 is already uniform
    assert result.keep.tolist() == _mask(model, [[0, 1], [0, 3], [1, 2]]).tolist()
    assert result.added == ((1, 3),) and result.removed == ((0, 2), (0, 3))
    assert result.heads_kept_before == 7 and int(result.keep.sum()) == 6
    unscored = round_to_uniform(_mask(model, [[0, 1, 2, 3], [0, 1], [0, 1, 2]]), None, model)  # mean 3
    assert unscored.heads_per_layer == 3 and unscored.keep[1].tolist() == [True, True, True, False]  # head order
    assert round_to_uniform(_mask(model, [[0, 1, 2], [0], [0, 1, 2, 3]]), None, model).heads_per_layer == 3  # 2.67
    assert round_to_uniform(_mask(model, [[0, 1, 2], [0], [0, 1, 2]]), None, model).heads_per_layer == 2  # 2.33
    assert round_to_uniform(keep, scores, model, heads_per_layer=1).keep.sum(-1).tolist() == [1, 1, 1]
    assert json.loads(json.dumps(result.to_dict()))["kept_heads"] == [[0, 1], [0, 3], [1, 2]]


def test_round_to_uniform_gqa_whole_groups_and_allowed_counts():
    model = _gqa()
    assert uniform_head_counts(model) == [2, 4, 8]  # whole groups of 2 that LlamaConfig accepts (64 % n)
    assert uniform_head_counts(_gqa("qwen2")) == [2, 4, 6, 8]
    keep = _mask(model, [[0, 1, 2, 3, 4, 5], [0, 2, 4, 6, 7], [0, 1, 3]])  # mean 14/3 = 4.67 -> 4 (6 not allowed)
    scores = torch.arange(24, dtype=torch.float32).view(3, 8)  # later heads more important
    result = round_to_uniform(keep, scores, model)
    assert result.heads_per_layer == 4 and result.kv_heads_per_layer == 2
    # per layer: groups ranked by heads the mask keeps, then summed score
    assert result.keep.tolist() == _mask(model, [[2, 3, 4, 5], [6, 7, 4, 5], [0, 1, 2, 3]]).tolist()
    assert loads_in(model, result.keep).runtime_safe
    assert round_to_uniform(keep, scores, _gqa("qwen2")).heads_per_layer == 4
    with pytest.raises(UserError, match="6 heads per layer is not runtime-safe for this model; choose one of 2, 4, 8"):
        round_to_uniform(keep, scores, model, heads_per_layer=6)
    with pytest.raises(UserError, match=r"head scores have shape \(2, 8\)"):
        round_to_uniform(keep, torch.zeros(2, 8), model)


def test_round_to_uniform_on_a_pruned_model_and_accuracy_cost():
    model = tiny_model("bert")
    pruned = headprune.prune(model, _mask(model, [[0, 1], [0, 1, 2, 3], [1, 2, 3]]))
    result = round_to_uniform(_mask(model, [[0, 1], [0, 1, 2, 3], [1, 2, 3]]), None, pruned)
    assert not (result.keep & ~headprune.kept_mask(pruned)).any()  # never re-adds a head the model no longer has
    assert result.allowed_counts == (1, 2) and result.heads_per_layer == 2
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    costed = round_to_uniform(_mask(model, [[0, 1, 2, 3], [0], [1, 2]]), None, model, batches=batches)
    assert costed.metrics_before["accuracy"] == headprune.evaluate(model, batches, _mask(model, [[0, 1, 2, 3], [0], [1, 2]]))["accuracy"]
    assert costed.metrics_after["n"] == 8
