"""headprune.deploy: 'loads in' verdicts checked by really loading, uniform rounding, the ONNX file's sidecar and
atomic writing, parity and ONNX Runtime latency (tiny models; the per-family export is in test_deploy_onnx.py)."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
import transformers

import headprune
from headprune.core.errors import OutputExistsError, UserError
from headprune.deploy import (
    LatencySettings,
    check_parity,
    compare_runtimes,
    export_onnx,
    layer_shapes,
    loads_in,
    measure_onnx,
    read_sidecar,
    round_to_uniform,
    session,
    uniform_head_counts,
)
from headprune.deploy import export as export_module
from headprune.deploy.latency import _ort_warning
from headprune.deploy.runtime import feed, graph_input_names
from headprune.model import layout
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lsq import Recovery

AUTO = {"classification": transformers.AutoModelForSequenceClassification,
        "causal-lm": transformers.AutoModelForCausalLM}


def _gqa(family="llama"):
    """8 query heads in 4 KV groups of 2, hidden size 64: LlamaConfig accepts 1, 2, 4 and 8 heads only."""
    return tiny_model(family, hidden_size=64, num_attention_heads=8, num_key_value_heads=4)


def _mask(model, rows):
    keep = torch.zeros(layout.head_grid(model), dtype=torch.bool)
    for layer, heads in enumerate(rows):
        keep[layer, heads] = True
    return keep


def _logits(model, batch):
    extra = {"use_cache": False} if layout.task_of(model) == "causal-lm" else {}
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits


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


def test_graph_inputs_per_family():
    assert graph_input_names(tiny_model("bert")) == ["input_ids", "attention_mask", "token_type_ids"]
    assert graph_input_names(tiny_model("roberta", type_vocab_size=1)) == ["input_ids", "attention_mask"]  # roberta-base
    assert graph_input_names(tiny_model("distilbert")) == ["input_ids", "attention_mask"]
    assert graph_input_names(tiny_model("gpt2")) == ["input_ids", "attention_mask"]
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, image_size=16, patch_size=4))
    with pytest.raises(UserError, match="does not take token ids"):
        graph_input_names(vit)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One BERT classifier export with uneven heads and an empty layer (shared: an export takes seconds)."""
    model = tiny_model("bert")
    keep = _mask(model, [[], [0, 3], [1, 2, 3]])
    path = tmp_path_factory.mktemp("onnx") / "bert.onnx"
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    return model, keep, export_onnx(model, path, keep, batches=batches, model_id="tiny-bert", meta={"note": "test"})


def test_export_writes_file_and_sidecar(exported):
    model, keep, result = exported
    assert result.parity.ok and result.parity.max_abs_diff < 1e-4 and result.parity.agreement == 1.0
    assert result.parity.source == "given batches" and result.parity.examples == 8
    record = read_sidecar(result.path)
    assert record == json.loads(json.dumps(result.to_dict()))
    assert record["kept_heads"] == [[], [0, 3], [1, 2, 3]] and record["model_id"] == "tiny-bert"
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["versions"]["exporter"] == "torch.onnx.export(dynamo=True)" and record["opset"] >= 18
    assert record["meta"] == {"note": "test"} and record["heads_kept"] == 5
    proto = onnx.load(result.path, load_external_data=False)
    identity = json.loads({p.key: p.value for p in proto.metadata_props}["headprune"])
    assert identity["kept_heads"] == [[], [0, 3], [1, 2, 3]]
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert sorted(p.name for p in Path(result.path).parent.iterdir()) == ["bert.onnx", "bert.onnx.headprune.json"]
    with headprune.masked(model, keep):  # the graph equals the masked dense model, at other shapes too
        for b, t in [(1, 1), (3, 5), (2, 30)]:
            batch = tiny_batch(model, batch_size=b, seq_len=t, seed=7)
            got = session(result.path).run(None, {k: v.numpy() for k, v in feed(batch, record["inputs"]).items()})[0]
            torch.testing.assert_close(torch.from_numpy(got), _logits(model, batch), atol=1e-4, rtol=1e-4)


def test_export_refuses_existing_file_and_interrupted_export_leaves_it(exported, monkeypatch):
    model, keep, result = exported
    before = Path(result.path).read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        export_onnx(model, result.path, keep)
    with pytest.raises(UserError, match="is a folder"):
        export_onnx(model, Path(result.path).parent, keep)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module.runtime, "check_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(model, result.path, keep, overwrite=True)
    assert Path(result.path).read_bytes() == before
    folder = Path(result.path).parent
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary files left"
    with pytest.raises(UserError, match="not an ONNX file exported by headprune"):
        read_sidecar(folder / "other.onnx")


def test_export_refuses_a_recovery_for_another_mask(tmp_path):
    model = tiny_model("bert")
    recovery = Recovery.of_mask(model, _mask(model, [[0]] * 3))
    with pytest.raises(UserError, match="recovery was made for another mask"):
        export_onnx(model, tmp_path / "m.onnx", _mask(model, [[1]] * 3), recovery=recovery)
    assert not list(tmp_path.iterdir())


def test_parity_notices_a_different_model(exported):
    model, keep, result = exported
    other = headprune.prune(model, keep)
    with torch.no_grad():
        other.classifier.bias += 1.0
    parity = check_parity(other, session(result.path), [tiny_batch(model)])
    assert not parity.ok and parity.max_abs_diff == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(UserError, match="no batches"):
        check_parity(other, session(result.path), [])


def test_onnx_runtime_latency_beside_torch(exported):
    model, keep, result = exported
    settings = LatencySettings(batch_size=2, seq_len=8, repeats=2, warmup=1, threads=1)
    ort = measure_onnx(model, keep, settings, pruned_path=result.path)
    assert ort.runtime == "onnxruntime" and ort.settings.threads == 1
    assert ort.dense.latency_ms_median > 0 and ort.pruned.latency_ms_median > 0
    assert ort.flop_ratio == pytest.approx(headprune.flops_per_token(model, keep, 8) / headprune.flops_per_token(model, None, 8))
    assert ort.pruned.params < ort.dense.params
    assert set(ort.to_dict()) >= {"time_ratio", "time_ratio_paired", "flop_ratio", "speedup", "warning", "dense", "pruned"}
    torch_side = compare_runtimes(model, keep, settings, runtimes=("torch",))["torch"]
    assert torch_side.runtime == "torch" and torch_side.flop_ratio == pytest.approx(ort.flop_ratio)
    with pytest.raises(UserError, match="unknown runtime"):
        compare_runtimes(model, keep, settings, runtimes=("tensorrt",))
    with pytest.raises(UserError, match="batch_size must be a whole number"):
        measure_onnx(model, keep, LatencySettings(batch_size=0))


def test_overhead_bound_warning_in_onnx_runtime_terms():
    settings = LatencySettings(batch_size=1, seq_len=8, threads=1)
    assert "overhead-bound (per-operator dispatch" in _ort_warning(0.98, 0.7, settings)
    assert _ort_warning(0.75, 0.7, settings) is None  # most of the FLOP saving realised
    assert _ort_warning(1.0, 0.99, settings) is None  # nothing to gain
