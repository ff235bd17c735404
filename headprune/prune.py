"""Physical head pruning, and saving / reloading pruned or masked models.

`prune(model, keep)` returns a copy whose q/k/v projections lose the removed heads' rows and whose output
projection loses their columns, so the model really gets smaller and faster. What is stored, per layer:

* the kept query heads, in original order (`config.headprune_heads`, original head ids);
* grouped-query attention (Llama, Mistral, Qwen2): a key/value head goes only when every query head that
  shares it goes. `repeat_kv` maps stored query head i to stored KV slot i // n_rep with one n_rep per layer,
  so when kept groups keep *different* numbers of query heads, n_rep becomes the gcd of those numbers and a
  KV head is stored once per n_rep of its query heads (`config.headprune_kv_heads` lists the original KV
  head in every slot). Outputs are exact; the KV cache then holds those copies. Keeping equal numbers of
  query heads per group (`units.to_units(..., "group-equal")`) avoids any copy;
* a layer that loses every head keeps only its output projection's bias: its attention module is replaced
  by one that returns that bias (or nothing, where the projection sits outside the attention module).
"""
from __future__ import annotations

import copy
import json
import math
import types
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn

from . import arch
from .atomic import atomic_directory, atomic_write_text
from .mask import mask_to_dict

PRUNED_FILE = "headprune_pruned.json"
MASK_FILE = "headprune_mask.json"
FORMAT_VERSION = 1


def _slots(positions: list[int], head_dim: int) -> torch.Tensor:
    """Feature indices of the given head slots (slot p covers p*head_dim:(p+1)*head_dim)."""
    if not positions:
        return torch.zeros(0, dtype=torch.long)
    return (torch.tensor(positions)[:, None] * head_dim + torch.arange(head_dim)).flatten()


def _select_out_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep output features `index` of a Linear (weight rows) or GPT-2 Conv1D (weight columns), in place."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight = nn.Parameter(module.weight[index].clone(), requires_grad=module.weight.requires_grad)
            module.out_features = len(index)
        else:  # transformers.pytorch_utils.Conv1D: weight (in, out)
            module.weight = nn.Parameter(module.weight[:, index].clone(), requires_grad=module.weight.requires_grad)
            module.nf = len(index)
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias[index].clone(), requires_grad=module.bias.requires_grad)


def _select_in_features(module: nn.Module, index: torch.Tensor) -> None:
    """Keep input features `index` of a Linear (weight columns) or Conv1D (weight rows), in place."""
    with torch.no_grad():
        if isinstance(module, nn.Linear):
            module.weight = nn.Parameter(module.weight[:, index].clone(), requires_grad=module.weight.requires_grad)
            module.in_features = len(index)
        else:
            module.weight = nn.Parameter(module.weight[index].clone(), requires_grad=module.weight.requires_grad)


def _no_heads_forward(self, hidden_states=None, *args, **kwargs):
    """Attention of a layer with no heads left: outputs zeros of width 0, projected (bias only) if needed."""
    if hidden_states is None:
        hidden_states = args[0]
    empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)  # (B, T, 0)
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is not None and getattr(self, "layer_idx", None) is not None and hasattr(cache, "update"):
        kv = hidden_states.new_zeros(hidden_states.shape[0], 0, hidden_states.shape[1], self._headprune_head_dim)
        cache.update(kv, kv, self.layer_idx)  # keeps the cache's sequence length right for this layer
    if not self._headprune_out_path:
        return empty, None
    proj = arch.get_path(self, self._headprune_out_path)  # output = its bias alone
    width = proj.out_features if isinstance(proj, nn.Linear) else proj.nf
    out = hidden_states.new_zeros(*hidden_states.shape[:-1], width)
    return (out if proj.bias is None else out + proj.bias), None


def _kv_layout(kept: list[int], present_kv_slot: dict[int, int], group_size: int) -> tuple[list[int], list[int]]:
    """KV slots for kept query heads: (original KV head per new slot, source slot per new slot).

    Each kept group g with c_g query heads gets c_g / n_rep copies, n_rep = gcd over kept groups.
    """
    groups: dict[int, list[int]] = {}
    for h in kept:
        groups.setdefault(h // group_size, []).append(h)
    if not groups:
        return [], []
    n_rep = math.gcd(*(len(hs) for hs in groups.values()))
    kv_ids, sources = [], []
    for g, hs in groups.items():
        for _ in range(len(hs) // n_rep):
            kv_ids.append(g)
            sources.append(present_kv_slot[hs[0]])
    return kv_ids, sources


def _prune_in_place(model: nn.Module, keep: torch.Tensor) -> None:
    """Remove every stored head with keep=False from `model`, updating its config bookkeeping."""
    adapter = arch.adapter_for(model)
    dh = arch.head_dim(model)
    group_size = arch.kv_group_size(model)
    present, present_kv = arch.present_heads(model), arch.present_kv_heads(model)
    new_heads, new_kv_heads = [], []
    for layer, block in enumerate(arch.blocks(model)):
        heads, kv_slots = present[layer], present_kv[layer]
        n_rep = len(heads) // len(kv_slots) if kv_slots else 1
        kept = [h for h in heads if keep[layer, h]]
        q_pos = [heads.index(h) for h in kept]
        if adapter.gqa:
            slot_of = {h: heads.index(h) // n_rep for h in heads}
            kv_ids, kv_pos = _kv_layout(kept, slot_of, group_size)
        else:
            kv_ids, kv_pos = kept, q_pos
        q_index, kv_index = _slots(q_pos, dh), _slots(kv_pos, dh)
        if adapter.fused_qkv:
            width = len(heads) * dh
            fused = torch.cat([q_index, kv_index + width, kv_index + 2 * width])
            _select_out_features(arch.get_path(block, adapter.fused_qkv), fused)
        else:
            _select_out_features(arch.get_path(block, adapter.q), q_index)
            _select_out_features(arch.get_path(block, adapter.k), kv_index)
            _select_out_features(arch.get_path(block, adapter.v), kv_index)
        _select_in_features(arch.get_path(block, adapter.o), q_index)
        attention = arch.get_path(block, adapter.attention)
        adapter.update_counts(attention, len(kept), len(kv_ids), dh)
        if not kept and not isinstance(attention.__dict__.get("forward"), types.MethodType):
            attention._headprune_out_path = adapter.o[len(adapter.attention) + 1 :] if adapter.o_inside_attention else ""
            attention._headprune_head_dim = dh
            attention.forward = types.MethodType(_no_heads_forward, attention)
        new_heads.append(kept)
        new_kv_heads.append(kv_ids)
    _record_structure(model, new_heads, new_kv_heads)


def config_rejects_counts(config, num_heads: int, num_kv_heads: int) -> str | None:
    """Why transformers refuses `config` with these head counts (its own class validators, as run by
    `save_pretrained` and `from_pretrained`), or None when it accepts them. E.g. transformers 5's LlamaConfig
    demands hidden_size % num_attention_heads == 0 even though the config carries `head_dim`."""
    trial = copy.deepcopy(config)
    trial.num_attention_heads = num_heads
    if hasattr(trial, "num_key_value_heads"):
        trial.num_key_value_heads = num_kv_heads
    try:
        trial.validate()
    except (StrictDataclassError, ValueError, TypeError) as exc:
        cause = exc.__cause__ or exc  # the validator's own message
        return f"{type(config).__name__}: {cause}"
    return None


def _record_structure(model: nn.Module, heads: list[list[int]], kv_heads: list[list[int]]) -> None:
    """Store the kept heads in the config; uniform GQA shapes also get plain-HF head counts where the
    config class accepts them (else it keeps the original counts, so it still validates and saves)."""
    config, adapter = model.config, arch.adapter_for(model)
    n_heads, n_kv, dh = arch.num_heads(model), arch.num_kv_heads(model), arch.head_dim(model)
    config.headprune_num_heads, config.headprune_num_kv_heads = n_heads, n_kv
    config.headprune_heads = heads
    if adapter.gqa:
        config.headprune_kv_heads = kv_heads
        config.head_dim = dh
        shapes = {(len(h), len(kv)) for h, kv in zip(heads, kv_heads)}
        uniform = len(shapes) == 1 and min(shapes)[0] > 0
        plain = uniform and config_rejects_counts(config, *min(shapes)) is None
        config.num_attention_heads, config.num_key_value_heads = min(shapes) if plain else (n_heads, n_kv)


def is_plain_loadable(model: nn.Module) -> bool:
    """True when a saved copy of `model` loads with plain `from_pretrained` (no headprune needed): every
    layer stores all its heads, or the config's own head counts describe every layer."""
    heads = arch.present_heads(model)
    full = all(len(h) == arch.num_heads(model) for h in heads)
    if full:
        return True
    config = model.config
    return arch.adapter_for(model).explicit_head_dim and all(len(h) == config.num_attention_heads for h in heads)


def prune(model: nn.Module, keep) -> nn.Module:
    """A new model with the heads where keep=False physically removed; `model` itself is unchanged.

    keep: shaped `head_grid(model)`, True = keep (heads already pruned away stay away). The result's outputs
    equal `masked(model, keep)` up to float rounding. See the module docstring for what is stored.
    """
    keep = arch.to_keep_tensor(keep, model)
    pruned = copy.deepcopy(model)
    _prune_in_place(pruned, keep)
    return pruned


def kept_mask(model: nn.Module) -> torch.Tensor:
    """The heads a (possibly pruned) model still stores, as a keep mask (L, H)."""
    keep = torch.zeros(arch.head_grid(model), dtype=torch.bool)
    for layer, heads in enumerate(arch.present_heads(model)):
        keep[layer, heads] = True
    return keep


def save_pruned(model: nn.Module, path: str | Path, tokenizer=None, *, meta: dict | None = None) -> Path:
    """Save a (pruned) model: safetensors weights, HF config, and `headprune_pruned.json` (kept heads).

    Written atomically: an interrupted save leaves no folder that loads. `load_pruned` loads any shape; plain
    `from_pretrained` works too when every layer keeps the same head counts (GQA families only) and the config
    class accepts them (`config_rejects_counts`; e.g. LlamaConfig wants hidden_size % heads == 0):
    `loads_with_from_pretrained` in the JSON says which.
    """
    path = Path(path)
    record = {
        "format_version": FORMAT_VERSION,
        "family": arch.family_of(model),
        "architecture": type(model).__name__,
        "num_layers": arch.num_layers(model),
        "num_heads": arch.num_heads(model),
        "num_kv_heads": arch.num_kv_heads(model),
        "head_dim": arch.head_dim(model),
        "kept_heads": arch.present_heads(model),
        "kv_heads": arch.present_kv_heads(model),
        "heads_kept": int(sum(map(len, arch.present_heads(model)))),
        "parameters": arch.parameter_count(model),
        "loads_with_from_pretrained": is_plain_loadable(model),
        "meta": meta or {},
    }
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / PRUNED_FILE, json.dumps(record, indent=2) + "\n")
    return path


def _load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All safetensors tensors of a saved model folder (single file or shards)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def load_pruned(path: str | Path) -> nn.Module:
    """Load a folder written by `save_pruned` (any per-layer head counts), in eval mode."""
    import transformers

    path = Path(path)
    info_file = path / PRUNED_FILE
    if not info_file.is_file():
        raise ValueError(f"{path} is not a headprune pruned-model folder (no {PRUNED_FILE})")
    info = json.loads(info_file.read_text(encoding="utf-8"))
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{info_file}: unknown format_version {info.get('format_version')!r}")
    config = transformers.AutoConfig.from_pretrained(path)
    config.num_attention_heads = info["num_heads"]
    if arch.adapter_for(config).gqa:
        config.num_key_value_heads = info["num_kv_heads"]
    for key in ("headprune_heads", "headprune_kv_heads"):
        if hasattr(config, key):
            delattr(config, key)
    model_class = getattr(transformers, info["architecture"], None)
    if model_class is None:
        raise ValueError(f"transformers has no class {info['architecture']!r} (needed by {path})")
    model = model_class._from_config(config)
    keep = torch.zeros(info["num_layers"], info["num_heads"], dtype=torch.bool)
    for layer, heads in enumerate(info["kept_heads"]):
        keep[layer, heads] = True
    _prune_in_place(model, keep)
    state = _load_state_dict(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    untied_missing = [k for k in missing if k not in tied and not any(k.endswith(t) for t in tied)]
    if unexpected or untied_missing:
        raise ValueError(f"{path}: weights do not match the recorded heads (missing {untied_missing[:3]}, unexpected {unexpected[:3]})")
    if missing:
        model.tie_weights()
    return model.eval()


def export_masked(model: nn.Module, keep, path: str | Path, tokenizer=None, *, meta: dict | None = None) -> Path:
    """Save an ordinary HF checkpoint where masked heads' output-projection columns are zero.

    It loads with plain `AutoModel*.from_pretrained` and no headprune installed (for a model that was not
    physically pruned before); outputs equal `masked(model, keep)`. Also writes `headprune_mask.json`.
    """
    keep = arch.to_keep_tensor(keep, model)
    exported = copy.deepcopy(model)
    dh = arch.head_dim(model)
    for layer, (block, heads) in enumerate(zip(arch.blocks(exported), arch.present_heads(exported))):
        dropped = [pos for pos, h in enumerate(heads) if not keep[layer, h]]
        o = arch.get_path(block, arch.adapter_for(exported).o)
        with torch.no_grad():
            arch.in_out_weight(o)[_slots(dropped, dh)] = 0  # a view: zeroes the dropped heads' input slices
    record = mask_to_dict(keep, model, meta=meta)
    with atomic_directory(path) as tmp:
        exported.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_text(tmp / MASK_FILE, json.dumps(record, indent=2) + "\n")
    return Path(path)
