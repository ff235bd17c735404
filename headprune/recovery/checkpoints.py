"""Fine-tuning checkpoints on disk: `DIR/step-00000123/` folders, the newest two kept.

Each holds the weights (`model/`, written by `save_pruned`; LoRA runs store the adapter in the state instead),
`trainer_state.pt` (optimizer, scheduler, RNG states, step, losses: plain tensors and numbers, loaded with
`torch.load(weights_only=True)`) and `checkpoint.json` (step and the run's settings, which a resume must match).
The folder itself carries `headprune_checkpoints.json` (`core.files.CHECKPOINTS`), so headprune recognises it as
its own and replaces it only when asked (`clear_checkpoints`).
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.files import atomic_directory, atomic_write_bytes, atomic_write_text
from ..core.outputs import CHECKPOINTS, mark_output
from ..model.layout import kept_mask
from ..model.storage import load_pruned, save_pruned

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.pt"
INFO_FILE = "checkpoint.json"
KEEP_CHECKPOINTS = 2


def checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and (p / INFO_FILE).is_file()]
    number = lambda p: int(p.name[len(CHECKPOINT_PREFIX):]) if p.name[len(CHECKPOINT_PREFIX):].isdigit() else -1
    return sorted(found, key=number)


def clear_checkpoints(directory: str | Path) -> None:
    """Remove the checkpoints of an earlier run from headprune's own checkpoints folder (a fresh start with
    overwrite: the newest-two rule would otherwise keep the earlier run's later steps)."""
    for old in checkpoints(directory):
        shutil.rmtree(old)


def save_checkpoint(directory: Path, state: dict, model, settings: dict, adapter: dict | None) -> Path:
    """Write `directory/step-N/` atomically and drop all but the newest `KEEP_CHECKPOINTS`."""
    directory = Path(directory)
    if CHECKPOINTS.record(directory) is None:  # a new folder (or one from before folders were marked)
        mark_output(directory, CHECKPOINTS, {"settings": settings})
    step = int(state["step"])
    target = directory / f"{CHECKPOINT_PREFIX}{step:08d}"
    payload = dict(state)
    if adapter is not None:
        payload["adapter"] = adapter
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_directory(target, overwrite=True) as tmp:  # a stop right after a periodic checkpoint rewrites it
        if adapter is None:
            save_pruned(model, tmp / "model")
        atomic_write_bytes(tmp / STATE_FILE, buffer.getvalue())
        atomic_write_text(tmp / INFO_FILE, json.dumps({"step": step, "settings": settings}, indent=2) + "\n")
    for old in checkpoints(directory)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(path: Path, model, settings: dict, lora: bool) -> dict:
    """Restore `model`'s weights from checkpoint `path` and return its training state (checked against `settings`)."""
    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    saved = info.get("settings", {})
    changed = [f"{k} {saved.get(k)!r} ≠ {v!r}" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise UserError(f"the checkpoint {path} was made with other settings ({'; '.join(changed[:3])}); "
                        "resume with the same settings, or start afresh without resuming")
    # optimizer / scheduler state dicts, RNG byte tensors and (LoRA) adapter tensors: all plain data
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state.pop("adapter"))
    else:
        saved_model = load_pruned(path / "model")
        if not torch.equal(kept_mask(saved_model), kept_mask(model)):
            raise UserError(f"the checkpoint {path} holds a model with other heads than this one")
        with torch.no_grad():
            for name, tensor in saved_model.state_dict().items():
                model.state_dict()[name].copy_(tensor)
    return state
