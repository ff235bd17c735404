"""Saving and reloading pruned (or masked) models.

`save_pruned` writes safetensors weights, the HF config and `headprune_pruned.json` (the marker: kept heads per
layer, shapes, whether plain `from_pretrained` can load the folder); `load_pruned` rebuilds any per-layer head
counts from that record and checks every weight against it; `export_masked` writes an ordinary checkpoint with
the removed heads' output-projection columns zeroed. Folders are written atomically; loading never unpickles.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..core.errors import UserError
from ..core.files import atomic_directory, atomic_write_text
from ..core.outputs import MASKED_MODEL, PRUNED_MODEL
from .adapters import adapter_for, family_of, in_out_weight
from .intervene import private_copy
from .layout import (
    blocks,
    get_path,
    head_dim,
    num_heads,
    num_kv_heads,
    num_layers,
    parameter_count,
    present_heads,
    present_kv_heads,
    to_keep_tensor,
)
from .schema import mask_to_dict
from .surgery import head_slots, is_plain_loadable, prune_in_place

PRUNED_FILE = PRUNED_MODEL.marker  # "headprune_pruned.json"
MASK_FILE = MASKED_MODEL.marker  # "headprune_mask.json"
FORMAT_VERSION = 1


def pruned_record(model: nn.Module, meta: dict | None = None) -> dict:
    """The `headprune_pruned.json` record of a (pruned) model."""
    heads = present_heads(model)
    return {
        "format_version": FORMAT_VERSION,
        "family": family_of(model),
        "architecture": type(model).__name__,
        "num_layers": num_layers(model),
        "num_heads": num_heads(model),
        "num_kv_heads": num_kv_heads(model),
        "head_dim": head_dim(model),
        "kept_heads": heads,
        "kv_heads": present_kv_heads(model),
        "heads_kept": int(sum(map(len, heads))),
        "parameters": parameter_count(model),
        "loads_with_from_pretrained": is_plain_loadable(model),
        "meta": meta or {},
    }


def save_pruned(model: nn.Module, path: str | Path, tokenizer=None, *, meta: dict | None = None,
                overwrite: bool = False, extra_files: Mapping[str, str] | None = None) -> Path:
    """Save a (pruned) model: safetensors weights, HF config, and `headprune_pruned.json` (kept heads).

    Written atomically: an interrupted save leaves no folder that loads. An existing folder is replaced only
    with `overwrite` (and the caller's own checks of what it is). `load_pruned` loads any shape; plain
    `from_pretrained` works too when every layer keeps the same head counts (GQA families only) and the config
    class accepts them (`config_rejects_counts`; e.g. LlamaConfig wants hidden_size % heads == 0):
    `loads_with_from_pretrained` in the JSON says which. `extra_files` ({file name: text}, e.g. a report) are
    written into the folder with the rest, in the same atomic step.
    """
    path = Path(path)
    record = pruned_record(model, meta)
    extra_files = dict(extra_files or {})
    for name in extra_files:
        if Path(name).name != name or name in ("", ".", "..", PRUNED_FILE):
            raise UserError(f"an extra file needs a plain file name other than {PRUNED_FILE}; got {name!r}")
    with atomic_directory(path, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, text in extra_files.items():
            atomic_write_text(tmp / name, text)
        atomic_write_text(tmp / PRUNED_FILE, json.dumps(record, indent=2) + "\n")
    return path


def _load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All safetensors tensors of a saved model folder (single file or shards)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{file} is not a readable safetensors file: {exc}") from None
    return state


def read_pruned_record(path: str | Path) -> dict:
    """The checked `headprune_pruned.json` of a saved folder; `UserError` saying what is wrong with it."""
    path = Path(path)
    info_file = path / PRUNED_FILE
    if not info_file.is_file():
        raise UserError(f"{path} is not a headprune pruned-model folder (no {PRUNED_FILE})")
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{info_file} is not valid JSON ({exc}); save the model again") from None
    if not isinstance(info, dict):
        raise UserError(f"{info_file} is not a headprune record; save the model again")
    if info.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{info_file}: unknown format_version {info.get('format_version')!r}")
    for key in ("num_layers", "num_heads", "num_kv_heads"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{info_file}: '{key}' must be a whole number ≥ 1, got {value!r}")
    if not isinstance(info.get("architecture"), str):
        raise UserError(f"{info_file}: 'architecture' is missing")
    kept = info.get("kept_heads")
    heads = info["num_heads"]
    if not isinstance(kept, list) or len(kept) != info["num_layers"] or not all(
            isinstance(row, list) and all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h < heads
                                          for h in row) for row in kept):
        raise UserError(f"{info_file}: 'kept_heads' must list {info['num_layers']} layers of head ids in "
                        f"[0, {heads})")
    return info


def load_pruned(path: str | Path) -> nn.Module:
    """Load a folder written by `save_pruned` (any per-layer head counts), in eval mode."""
    import transformers

    path = Path(path)
    info = read_pruned_record(path)
    try:
        config = transformers.AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"could not read the config in {path}: {' '.join(str(exc).split())[:200]}") from None
    if getattr(config, "num_hidden_layers", None) != info["num_layers"]:
        raise UserError(f"{path}: config.json has {getattr(config, 'num_hidden_layers', None)} layers but "
                        f"{PRUNED_FILE} records {info['num_layers']}")
    config.num_attention_heads = info["num_heads"]
    if adapter_for(config).gqa:
        config.num_key_value_heads = info["num_kv_heads"]
    for key in ("headprune_heads", "headprune_kv_heads"):
        if hasattr(config, key):
            delattr(config, key)
    model_class = getattr(transformers, info["architecture"], None)
    if model_class is None or not isinstance(model_class, type) or not issubclass(model_class, nn.Module):
        raise UserError(f"transformers has no model class {info['architecture']!r} (needed by {path})")
    model = model_class._from_config(config)
    keep = torch.zeros(info["num_layers"], info["num_heads"], dtype=torch.bool)
    for layer, heads in enumerate(info["kept_heads"]):
        keep[layer, heads] = True
    prune_in_place(model, keep)
    state = _load_state_dict(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches: the weights belong to other heads than the record says
        raise UserError(f"{path}: the weights do not match the heads recorded in {PRUNED_FILE} "
                        f"({' '.join(str(exc).split())[:200]})") from None
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    untied_missing = [k for k in missing if k not in tied and not any(k.endswith(t) for t in tied)]
    if unexpected or untied_missing:
        raise UserError(f"{path}: weights do not match the recorded heads (missing {untied_missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    if missing:
        model.tie_weights()
    return model.eval()


def export_masked(model: nn.Module, keep, path: str | Path, tokenizer=None, *, meta: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Save an ordinary HF checkpoint where masked heads' output-projection columns are zero.

    It loads with plain `AutoModel*.from_pretrained` and no headprune installed (for a model that was not
    physically pruned before); outputs equal `masked(model, keep)`. Also writes `headprune_mask.json`.
    """
    keep = to_keep_tensor(keep, model)
    exported = private_copy(model)
    dh = head_dim(model)
    for layer, (block, heads) in enumerate(zip(blocks(exported), present_heads(exported))):
        dropped = [pos for pos, h in enumerate(heads) if not keep[layer, h]]
        o = get_path(block, adapter_for(exported).o)
        with torch.no_grad():
            in_out_weight(o)[head_slots(dropped, dh)] = 0  # a view: zeroes the dropped heads' input slices
    record = mask_to_dict(keep, model, meta=meta)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        exported.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / MASK_FILE, json.dumps(record, indent=2) + "\n")
    return Path(path)
