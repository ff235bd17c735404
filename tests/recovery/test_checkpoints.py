"""recovery.checkpoints: step folders on disk, the newest two kept, weights and state restored, other runs refused."""
from __future__ import annotations

import json

import pytest
import torch

from headprune.core.errors import UserError
from headprune.core.outputs import CHECKPOINTS
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.checkpoints import (
    INFO_FILE,
    STATE_FILE,
    checkpoints,
    clear_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def token_logits(model, batch):
    """Logits from token ids and attention mask (any wrapper: peft's PeftModel too), no gradients."""
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
SETTINGS = {"lr": 0.001, "epochs": 1}


def pruned_bert():
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[0, 1] = False
    return prune(tiny_model("bert"), keep)


def test_steps_are_written_atomically_and_only_the_newest_two_stay(tmp_path):
    model = pruned_bert()
    folder = tmp_path / "ckpt"
    assert checkpoints(folder) == []
    paths = [save_checkpoint(folder, {"step": step, "losses": [1.0]}, model, SETTINGS, None) for step in (3, 9, 10)]
    assert [p.name for p in paths] == ["step-00000003", "step-00000009", "step-00000010"]
    assert checkpoints(folder) == paths[1:] and not paths[0].exists()
    assert sorted(p.name for p in paths[2].iterdir()) == [INFO_FILE, "model", STATE_FILE]
    assert json.loads((paths[2] / INFO_FILE).read_text()) == {"step": 10, "settings": SETTINGS}
    assert CHECKPOINTS.record(folder)["settings"] == SETTINGS  # the folder says it is headprune's
    (folder / "step-00000011").mkdir()  # no checkpoint.json: an incomplete step is not listed
    assert checkpoints(folder) == paths[1:]
    assert save_checkpoint(folder, {"step": 10, "losses": [0.5]}, model, SETTINGS, None) == paths[2]  # rewritten
    assert torch.load(paths[2] / STATE_FILE, weights_only=True)["losses"] == [0.5]
    clear_checkpoints(folder)
    assert checkpoints(folder) == [] and CHECKPOINTS.record(folder) is not None


def test_load_restores_weights_and_returns_the_training_state(tmp_path):
    model = pruned_bert()
    rng = torch.get_rng_state()
    path = save_checkpoint(tmp_path, {"step": 4, "rng": rng, "losses": [2.0, 1.5]}, model, SETTINGS, None)
    trainee = pruned_bert()
    with torch.no_grad():
        for param in trainee.parameters():
            param.add_(1.0)
    batch = tiny_batch(model)
    assert not torch.allclose(token_logits(trainee, batch), token_logits(model, batch))
    state = load_checkpoint(path, trainee, SETTINGS, lora=False)
    assert state["step"] == 4 and state["losses"] == [2.0, 1.5] and torch.equal(state["rng"], rng)
    for (name, got), want in zip(trainee.state_dict().items(), model.state_dict().values()):
        assert torch.equal(got, want), name


def test_other_settings_or_other_heads_are_refused(tmp_path):
    path = save_checkpoint(tmp_path, {"step": 1}, pruned_bert(), SETTINGS, None)
    with pytest.raises(UserError, match=r"made with other settings \(lr 0.001 ≠ 0.01\); resume with the same settings"):
        load_checkpoint(path, pruned_bert(), {**SETTINGS, "lr": 0.01}, lora=False)
    with pytest.raises(UserError, match="holds a model with other heads than this one"):
        load_checkpoint(path, tiny_model("bert"), SETTINGS, lora=False)


def test_lora_runs_store_the_adapter_instead_of_the_model(tmp_path):
    from peft import get_peft_model_state_dict

    from headprune.recovery.lora import with_lora

    trained = with_lora(tiny_model("gpt2"), 2)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_()
    path = save_checkpoint(tmp_path, {"step": 2}, trained, SETTINGS, get_peft_model_state_dict(trained))
    assert not (path / "model").exists()
    fresh = with_lora(tiny_model("gpt2"), 2)
    batch = tiny_batch(tiny_model("gpt2"))
    assert not torch.allclose(token_logits(fresh, batch), token_logits(trained, batch))
    state = load_checkpoint(path, fresh, SETTINGS, lora=True)
    assert state == {"step": 2}  # the adapter is taken out of the state
    torch.testing.assert_close(token_logits(fresh, batch), token_logits(trained, batch))
