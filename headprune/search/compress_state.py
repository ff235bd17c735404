"""The compress loop's state on disk, so that `--resume` continues a run exactly where it stopped.

A folder (`core.files.CHECKPOINTS`, marked by `headprune_checkpoints.json`) holding `compress_state.json` — the
loop's state: plan, trajectory, current mask, scores, time ledger — and `model-NNNN/`, the current model
(`save_pruned`). After every step the new model folder is written first, then the state that names it, in one
atomic write (the commit point), then older model folders go: a run killed at any moment leaves the state of
its last finished step.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.files import atomic_write_text
from ..core.outputs import CHECKPOINTS, mark_output
from ..core.records import jsonable
from ..model.storage import load_pruned, save_pruned
from ..scoring.cache import batches_fingerprint, model_fingerprint
from .compress_plan import CompressData, CompressSettings

STATE_FILE = "compress_state.json"
MODEL_PREFIX = "model-"
FORMAT_VERSION = 1


class StateStore:
    """One run's state folder. `record` (settings and data fingerprints) must match for a resume."""

    def __init__(self, folder: str | Path, record: dict):
        self.folder = Path(folder)
        self.record = jsonable(record)

    def exists(self) -> bool:
        return (self.folder / STATE_FILE).is_file()

    def clear(self) -> None:
        """Forget an earlier run's state (a fresh start in headprune's own folder)."""
        (self.folder / STATE_FILE).unlink(missing_ok=True)
        for old in self.folder.glob(f"{MODEL_PREFIX}*"):
            shutil.rmtree(old, ignore_errors=True)

    def write(self, state: dict, model=None) -> None:
        """Commit `state`; with `model`, it becomes the state's current model (written first, named in
        `state["model_dir"]`)."""
        if CHECKPOINTS.record(self.folder) is None:
            mark_output(self.folder, CHECKPOINTS, {"what": "headprune compress state"})
        if model is not None:
            state["model_dir"] = f"{MODEL_PREFIX}{len(state['steps']):04d}"
            save_pruned(model, self.folder / state["model_dir"], overwrite=True)
        body = {"format_version": FORMAT_VERSION, "record": self.record, "state": jsonable(state)}
        atomic_write_text(self.folder / STATE_FILE, json.dumps(body, indent=1) + "\n")
        for old in self.folder.glob(f"{MODEL_PREFIX}*"):
            if old.name != state.get("model_dir"):
                shutil.rmtree(old, ignore_errors=True)

    def read(self) -> tuple[dict, object | None]:
        """(state, current model or None while it is the dense model); `UserError` when the state belongs to
        another run (other settings, model or data) or is unreadable."""
        path = self.folder / STATE_FILE
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read the compress state {path} ({exc}); start afresh without resuming") from None
        if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{path} is not a compress state this headprune writes; start afresh without resuming")
        changed = [key for key in sorted(set(body.get("record", {})) | set(self.record))
                   if body.get("record", {}).get(key) != self.record.get(key)]
        if changed:
            raise UserError(f"the state in {self.folder} was made by another run (different {', '.join(changed[:4])}); "
                            "resume with the same model, data and settings, or start afresh")
        state = body["state"]
        model = load_pruned(self.folder / state["model_dir"]) if state.get("model_dir") else None
        return state, model


def as_list(tensor: torch.Tensor) -> list:
    """A mask or score map as JSON-ready nested lists (NaN as None): how the state holds them."""
    return [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in tensor.tolist()]


def as_tensor(rows: list, dtype=torch.float32) -> torch.Tensor:
    """The inverse of `as_list`: nested lists (None as NaN) as a tensor."""
    return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=dtype)


def run_record(dense, data: CompressData, settings: CompressSettings, order) -> dict:
    """What a resumed run must share with the run it continues: settings, the dense model's weights, the data."""
    return {"settings": dataclasses.asdict(settings), "model": model_fingerprint(dense),
            **{name: batches_fingerprint(getattr(data, name)) for name in ("judge", "calib", "train", "test")},
            "order": None if order is None else as_list(order)}
