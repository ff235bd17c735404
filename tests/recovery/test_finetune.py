"""Recovery fine-tuning: the loss falls, distillation works, checkpoints resume to the same weights."""
from __future__ import annotations

import json

import pytest
import torch

from headprune.evaluation.loop import evaluate
from headprune.model.layout import kept_mask
from headprune.model.storage import load_pruned
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.checkpoints import checkpoints
from headprune.recovery.distill import distillation_kl
from headprune.recovery.finetune import recover
from headprune.recovery.lora import lora_targets

pytestmark = pytest.mark.usefixtures("one_thread")


def workload(family="bert", n=6, **overrides):
    dense = tiny_model(family, **overrides)
    batches = [tiny_batch(dense, batch_size=8, seed=i) for i in range(n)]
    keep = torch.ones(3, dense.config.num_attention_heads, dtype=torch.bool)
    keep[0, :2] = False
    keep[1, :] = False  # a layer with no heads left
    return dense, prune(dense, keep), batches


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finetune_improves_the_loss_and_leaves_the_input_alone():
    dense, pruned, batches = workload()
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    trained, report = recover(pruned, batches, distill=False, epochs=4, lr=2e-3, val_batches=batches)
    assert report["after"]["val"]["loss"] < report["before"]["val"]["loss"]
    assert report["steps"] == 24 and not report["stopped"] and report["dense"] == {}
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # trained a copy
    assert torch.equal(kept_mask(trained), kept_mask(pruned))


def test_distillation_loss_decreases_and_moves_towards_the_teacher():
    dense, pruned, batches = workload()
    trained, report = recover(pruned, batches, teacher=dense, alpha=1.0, temperature=2.0, epochs=5, lr=2e-3)
    losses = report["losses"]
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6

    def kl(model):
        with torch.no_grad():
            return sum(float(distillation_kl(model(**b).logits, dense(**b).logits, b["labels"], "classification", 2.0))
                       for b in batches)

    assert kl(trained) < kl(pruned)


def test_resume_after_stop_ends_with_the_same_weights(tmp_path):
    dense, pruned, batches = workload()
    options = dict(teacher=dense, epochs=2, lr=1e-3, seed=3)
    full, _ = recover(pruned, batches, **options)
    calls = []

    def stop_after_5():
        calls.append(1)
        return len(calls) > 5

    partial, report = recover(pruned, batches, checkpoint_dir=tmp_path, should_stop=stop_after_5, **options)
    assert report["stopped"] and report["steps"] == 5 and report["after"] == {}
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000005"]
    assert not same_weights(partial, full)
    resumed, report = recover(pruned, batches, checkpoint_dir=tmp_path, resume=True, checkpoint_every=4, **options)
    assert report["start_step"] == 5 and report["steps"] == 12 and report["resumed_from"].endswith("step-00000005")
    assert same_weights(resumed, full)
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000005", "step-00000008"]  # newest two kept
    saved = load_pruned(checkpoints(tmp_path)[-1] / "model")
    assert torch.equal(kept_mask(saved), kept_mask(pruned))
    with pytest.raises(ValueError, match="other settings"):
        recover(pruned, batches, checkpoint_dir=tmp_path, resume=True, **{**options, "lr": 5e-4})


def test_keyboard_interrupt_saves_a_checkpoint(tmp_path):
    dense, pruned, batches = workload()
    calls = []

    def interrupt_at_3():
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        recover(pruned, batches, teacher=dense, checkpoint_dir=tmp_path, should_stop=interrupt_at_3)
    info = json.loads((checkpoints(tmp_path)[-1] / "checkpoint.json").read_text())
    assert info["step"] == 3


def test_causal_lm_with_lora_merges_into_a_plain_pruned_model(tmp_path):
    dense, pruned, batches = workload("llama", n=4)
    assert "model.layers.0.self_attn.q_proj" in lora_targets(pruned)
    assert "model.layers.1.self_attn.q_proj" not in lora_targets(pruned)  # no heads left there: empty
    calls = []
    trained, report = recover(pruned, batches, teacher=dense, lora=True, lr=5e-3, epochs=3, val_batches=batches,
                              checkpoint_dir=tmp_path, should_stop=lambda: calls.append(1) or len(calls) > 4)
    assert report["stopped"] and (checkpoints(tmp_path)[-1] / "trainer_state.pt").is_file()
    trained, report = recover(pruned, batches, teacher=dense, lora=True, lr=5e-3, epochs=3, val_batches=batches,
                              checkpoint_dir=tmp_path, resume=True)
    assert report["start_step"] == 4 and report["steps"] == 12
    assert type(trained) is type(pruned) and not any("lora" in k for k in trained.state_dict())
    assert report["after"]["val"]["loss"] < report["before"]["val"]["loss"]
    assert evaluate(trained, batches)["loss"] == pytest.approx(report["after"]["val"]["loss"], rel=1e-5)


def test_bad_settings_are_one_line_errors():
    dense, pruned, batches = workload()
    with pytest.raises(ValueError, match="pass the unpruned model as teacher"):
        recover(pruned, batches)
    with pytest.raises(ValueError, match="need a checkpoint folder"):
        recover(pruned, batches, distill=False, resume=True)
    with pytest.raises(ValueError, match="alpha"):
        recover(pruned, batches, teacher=dense, alpha=1.5)
    with pytest.raises(ValueError, match="no training batches"):
        recover(pruned, [], distill=False)
