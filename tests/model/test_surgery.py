"""Head surgery on tiny random models of every family: masking, physical pruning, save/load, threads."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch

import headprune
from headprune.model import layout
from headprune.model.tiny import TINY_FAMILIES, tiny_batch, tiny_model

FAMILY_TASKS = [(f, None) for f in TINY_FAMILIES] + [("bert", "masked-lm"), ("distilbert", "masked-lm"), ("roberta", "masked-lm")]


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


def _logits(model, batch):
    with torch.no_grad():
        return model(**_inputs(batch)).logits


def _random_keep(model, seed=0, p=0.5):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(layout.head_grid(model), generator=gen) > p


def _reference_ablation(model, keep, batch):
    """Ablation by a plain forward hook that zeroes the heads' slices with no headprune code involved."""
    dh = layout.head_dim(model)
    handles = []
    for layer, proj in enumerate(layout.out_projections(model)):
        drop = (~keep[layer]).nonzero().flatten().tolist()

        def hook(module, args, drop=drop):
            x = args[0].clone()
            for h in drop:
                x[..., h * dh : (h + 1) * dh] = 0
            return (x,)

        handles.append(proj.register_forward_pre_hook(hook))
    try:
        return _logits(model, batch)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_masked_equals_reference_ablation_and_leaves_model_untouched(family, task):
    model = tiny_model(family, task)
    batch = tiny_batch(model)
    keep = _random_keep(model)
    dense = _logits(model, batch)
    with headprune.masked(model, keep):
        got = _logits(model, batch)
    assert not torch.allclose(got, dense, atol=1e-3), "masking half the heads must change the output"
    torch.testing.assert_close(got, _reference_ablation(model, keep, batch), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(model, batch), dense)  # outside the block: untouched


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
def test_prune_equals_masked_and_shrinks(family, task):
    model = tiny_model(family, task)
    batch = tiny_batch(model)
    keep = _random_keep(model, seed=1)
    keep[0] = False  # a layer that loses every head
    keep[1, 0] = True
    with headprune.masked(model, keep):
        expected = _logits(model, batch)
    before = layout.parameter_count(model)
    pruned = headprune.prune(model, keep)
    torch.testing.assert_close(_logits(pruned, batch), expected, atol=1e-4, rtol=1e-4)
    assert layout.parameter_count(pruned) < before
    assert layout.parameter_count(model) == before  # input model unchanged
    assert headprune.head_grid(pruned) == headprune.head_grid(model)
    assert torch.equal(headprune.kept_mask(pruned), keep)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_masking_a_pruned_model_and_pruning_twice(family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    first = _random_keep(model, seed=2, p=0.3)
    second = first & _random_keep(model, seed=3, p=0.3)
    pruned = headprune.prune(model, first)
    with headprune.masked(model, second):
        expected = _logits(model, batch)
    with headprune.masked(pruned, second):  # heads named by original index in the pruned model too
        torch.testing.assert_close(_logits(pruned, batch), expected, atol=1e-4, rtol=1e-4)
    twice = headprune.prune(pruned, second)
    torch.testing.assert_close(_logits(twice, batch), expected, atol=1e-4, rtol=1e-4)


def test_gradients_flow_through_masked_model():
    model = tiny_model("bert")
    batch = tiny_batch(model)
    keep = _random_keep(model)
    with headprune.masked(model, keep):
        model(**batch).loss.backward()
    q = model.bert.encoder.layer[0].attention.self.query.weight.grad
    assert q is not None and torch.isfinite(q).all()
    model.zero_grad()


def test_all_heads_removed_everywhere_still_runs():
    for family in ("bert", "gpt2", "llama"):
        model = tiny_model(family)
        batch = tiny_batch(model)
        keep = torch.zeros(layout.head_grid(model), dtype=torch.bool)
        with headprune.masked(model, keep):
            expected = _logits(model, batch)
        pruned = headprune.prune(model, keep)
        torch.testing.assert_close(_logits(pruned, batch), expected, atol=1e-4, rtol=1e-4)


def test_gqa_kv_heads_removed_only_with_whole_group():
    model = tiny_model("llama")  # 6 query heads, 2 KV groups of 3
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 0:3] = False  # whole group 0 of layer 0
    keep[1, 0] = False  # one head of group 0 in layer 1: group stays, counts 2 and 3 -> gcd 1 -> copies
    keep[2, [0, 3]] = False  # one head in each group: counts 2 and 2, no copies
    pruned = headprune.prune(model, keep)
    kv = layout.present_kv_heads(pruned)
    assert kv[0] == [1]
    assert kv[1] == [0, 0, 1, 1, 1]  # one stored KV slot per query head (n_rep 1)
    assert kv[2] == [0, 1]
    attn = [b.self_attn for b in layout.blocks(pruned)]
    assert [a.k_proj.out_features // layout.head_dim(model) for a in attn] == [1, 5, 2]
    assert [a.num_key_value_groups for a in attn] == [3, 1, 2]
    per_slot = 2 * layout.head_dim(model) * 4  # keys + values, fp32
    assert headprune.kv_cache_bytes_per_token(model) == 3 * 2 * per_slot
    assert headprune.kv_cache_bytes_per_token(pruned) == (1 + 5 + 2) * per_slot  # stored slots, copies included
    assert headprune.kv_cache_bytes_per_token(model, keep) == (1 + 2 + 2) * per_slot  # ideal, no copies
    equal = headprune.prune(model, headprune.to_units(keep, model, "group-equal"))
    assert headprune.kv_cache_bytes_per_token(equal) <= (1 + 2 + 2) * per_slot


def test_unit_modes():
    model = tiny_model("llama")
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, [0, 1]] = False  # group 0 keeps 1 of 3
    keep[1, [0, 3, 4]] = False  # group 0 keeps 2, group 1 keeps 1
    groups = headprune.kv_groups(model)
    assert groups == [0, 0, 0, 1, 1, 1]
    whole = headprune.to_units(keep, model, "kv-group")
    assert whole[0].tolist() == [False] * 3 + [True] * 3
    assert whole[1].tolist() == [True] * 3 + [False] * 3
    equal = headprune.to_units(keep, model, "group-equal")
    for layer in range(equal.shape[0]):
        counts = {int(c) for c in equal[layer].view(2, 3).sum(-1) if c > 0}
        assert len(counts) == 1
    with pytest.raises(ValueError, match="unknown unit mode"):
        headprune.to_units(keep, model, "blocks")


def test_uniform_gqa_prune_loads_with_plain_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model("llama")
    batch = tiny_batch(model)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[:, 3:] = False  # every layer: group 1 removed whole
    pruned = headprune.prune(model, keep)
    headprune.save_pruned(pruned, tmp_path / "p")
    info = json.loads((tmp_path / "p" / "headprune_pruned.json").read_text())
    assert info["loads_with_from_pretrained"] is True
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "p").eval()
    torch.testing.assert_close(_logits(plain, batch), _logits(pruned, batch), atol=1e-5, rtol=1e-5)


def _uniform_keeps(model, count, seed):
    """Two masks keeping `count` heads in every layer: the first `count` heads everywhere (same layout in every
    layer), and a random choice per layer (KV layouts may then differ between layers)."""
    layers, heads = layout.head_grid(model)
    first = torch.zeros(layers, heads, dtype=torch.bool)
    first[:, :count] = True
    gen = torch.Generator().manual_seed(seed)
    scattered = torch.zeros(layers, heads, dtype=torch.bool)
    for layer in range(layers):
        scattered[layer, torch.randperm(heads, generator=gen)[:count]] = True
    return first, scattered


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_every_uniform_head_count_saves_and_reloads(tmp_path, family):
    """transformers 5's LlamaConfig refuses hidden_size % heads != 0 (64 and 3, 5, 6, 7 heads here): such shapes
    used to crash save_pruned; now they save with the original counts, say so, and load with load_pruned."""
    from transformers import AutoModelForCausalLM

    model = tiny_model(family, hidden_size=64, num_attention_heads=8, num_key_value_heads=4)
    batch = tiny_batch(model)
    plain_counts = set()
    for count in range(1, 9):
        for variant, keep in enumerate(_uniform_keeps(model, count, seed=count)):
            pruned = headprune.prune(model, keep)
            folder = headprune.save_pruned(pruned, tmp_path / f"{count}-{variant}")
            expected = _logits(pruned, batch)
            torch.testing.assert_close(_logits(headprune.load_pruned(folder), batch), expected, atol=1e-5, rtol=1e-5)
            says_plain = json.loads((folder / "headprune_pruned.json").read_text())["loads_with_from_pretrained"]
            if says_plain:
                plain = AutoModelForCausalLM.from_pretrained(folder).eval()
                torch.testing.assert_close(_logits(plain, batch), expected, atol=1e-5, rtol=1e-5)
                plain_counts.add(count)
            else:
                with pytest.raises(Exception):  # shape mismatch or config validation: the marker was right
                    AutoModelForCausalLM.from_pretrained(folder)
    if family == "llama":
        assert plain_counts == {1, 2, 4, 8}  # the divisors of 64 among 1..8
    else:
        assert plain_counts == set(range(1, 9))


RELOAD_SCRIPT = """
import sys, torch, headprune
from headprune.model.tiny import tiny_batch
model = headprune.load_pruned(sys.argv[1])
batch = tiny_batch(model)
with torch.no_grad():
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
torch.save(logits, sys.argv[2])
"""


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_save_and_load_pruned_in_fresh_process(tmp_path, family):
    model = tiny_model(family)
    keep = _random_keep(model, seed=5)
    keep[0] = False
    keep[1, 1] = True
    pruned = headprune.prune(model, keep)
    headprune.save_pruned(pruned, tmp_path / "model")
    assert not list(tmp_path.glob(".model.*")), "no temp folder left behind"
    subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(tmp_path / "model"), str(tmp_path / "out.pt")], check=True)
    reloaded = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.testing.assert_close(reloaded, _logits(pruned, tiny_batch(pruned)), atol=0, rtol=0)


def test_extra_files_are_saved_with_the_model_and_odd_names_refused(tmp_path):
    model = headprune.prune(tiny_model("bert"), _random_keep(tiny_model("bert")))
    headprune.save_pruned(model, tmp_path / "model", extra_files={"report.json": "{}\n"})
    assert (tmp_path / "model" / "report.json").read_text() == "{}\n"
    for name in ("../escape.json", "headprune_pruned.json", ""):
        with pytest.raises(ValueError, match="plain file name"):
            headprune.save_pruned(model, tmp_path / "other", extra_files={name: "x"})
    assert not (tmp_path / "other").exists() and not (tmp_path / "escape.json").exists()


def test_interrupted_save_leaves_nothing_that_loads(tmp_path, monkeypatch):
    model = headprune.prune(tiny_model("bert"), _random_keep(tiny_model("bert")))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        headprune.save_pruned(model, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="not a headprune pruned-model folder"):
        headprune.load_pruned(tmp_path / "model")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_export_masked_loads_with_plain_transformers(tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model = tiny_model(family)
    batch = tiny_batch(model)
    keep = _random_keep(model, seed=7)
    headprune.export_masked(model, keep, tmp_path / "m")
    auto = AutoModelForCausalLM if family == "gpt2" else AutoModelForSequenceClassification
    plain = auto.from_pretrained(tmp_path / "m").eval()
    with headprune.masked(model, keep):
        expected = _logits(model, batch)
    torch.testing.assert_close(_logits(plain, batch), expected, atol=1e-5, rtol=1e-5)
    record = json.loads((tmp_path / "m" / "headprune_mask.json").read_text())
    assert record["heads_kept"] == int(keep.sum())


def test_threads_see_only_their_own_mask():
    model = tiny_model("bert")
    batch = tiny_batch(model)
    masks = [_random_keep(model, seed=s) for s in range(4)]
    expected = []
    for keep in masks:
        with headprune.masked(model, keep):
            expected.append(_logits(model, batch))
    results: dict[int, list[bool]] = {i: [] for i in range(4)}
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait()
        for _ in range(5):
            with headprune.masked(model, masks[i]):
                results[i].append(torch.allclose(_logits(model, batch), expected[i], atol=1e-6))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(all(r) and len(r) == 5 for r in results.values())


def test_bad_masks_rejected():
    model = tiny_model("bert")  # 3 x 4
    with pytest.raises(ValueError, match=r"expected \(num_layers, num_heads\) = \(3, 4\)"):
        with headprune.masked(model, torch.ones(2, 4, dtype=torch.bool)):
            pass
    with pytest.raises(ValueError, match="booleans"):
        with headprune.masked(model, torch.full((3, 4), 0.5)):
            pass
    with pytest.raises(ValueError, match="booleans or 0/1"):
        with headprune.masked(model, [[2] * 4] * 3):
            pass
    with headprune.masked(model, [[1, 0, 1, 1]] * 3):  # nested 0/1 lists are fine
        pass


def test_mask_json_round_trip_and_errors(tmp_path):
    model = tiny_model("bert")
    keep = _random_keep(model)
    path = headprune.write_mask(tmp_path / "mask.json", keep, model, model_id="tiny-bert", meta={"metric": "gradient"})
    assert torch.equal(headprune.read_mask(path, model, model_id="tiny-bert"), keep)
    record = json.loads(path.read_text())
    assert record["meta"] == {"metric": "gradient"} and record["num_heads"] == 4
    with pytest.raises(ValueError, match="made for model 'tiny-bert'"):
        headprune.read_mask(path, model, model_id="other-model")
    with pytest.raises(ValueError, match=r"3 layers x 4 heads, this model has 3 x 6"):
        headprune.read_mask(path, tiny_model("llama"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        headprune.read_mask(tmp_path / "bad.json", model)
    with pytest.raises(ValueError, match="no such mask file"):
        headprune.read_mask(tmp_path / "missing.json", model)
    record["kept_heads"][0] = [9]
    (tmp_path / "range.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"whole numbers in \[0, 4\)"):
        headprune.read_mask(tmp_path / "range.json", model, check_model_id=False)


def test_unsupported_architecture_names_supported_families():
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, num_heads=2, num_layers=1, d_ff=8))
    with pytest.raises(headprune.UnsupportedModelError, match="supports bert, roberta"):
        headprune.head_grid(model)


def test_vit_mask_and_prune():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=16, patch_size=4, num_labels=3, initializer_range=0.3)
    model = ViTForImageClassification(config).eval()
    pixels = {"pixel_values": torch.randn(2, 3, 16, 16)}
    keep = torch.tensor([[True, False, True, False], [False] * 4])
    with headprune.masked(model, keep):
        expected = _logits(model, pixels)
    assert not torch.allclose(expected, _logits(model, pixels), atol=1e-3)
    torch.testing.assert_close(expected, _reference_ablation(model, keep, pixels), atol=1e-5, rtol=1e-5)
    pruned = headprune.prune(model, keep)
    torch.testing.assert_close(_logits(pruned, pixels), expected, atol=1e-4, rtol=1e-4)
    assert layout.parameter_count(pruned) < layout.parameter_count(model)
