"""Disk cache for head scores, keyed by everything that changes them: model weights fingerprint, data
fingerprint, metric and its options (mask, seed), and the library versions.

Entries are safetensors files under `cache_dir("scores")`, written atomically, holding the aggregated raw
statistic (L, H) before sign, normalisation or NaN-filling, so every display option is a cache hit. Loading
safetensors never executes code. Callers store only what they computed on the model itself (no mask or
weights of their own in force: `headprune.scoring.api` checks `intervene.active`).
"""
from __future__ import annotations

import hashlib
import json
import threading
import weakref

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ..core.files import atomic_write_bytes
from ..core.paths import cache_dir
from ..core.versions import library_versions

CACHE_VERSION = 2
_SAMPLE = 4096  # values per parameter hashed exactly (strided), besides its sum and absolute sum


_MEMO: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_MEMO_LOCK = threading.Lock()


def _state_token(model) -> tuple:
    """Changes whenever a tensor is replaced, re-pointed or modified in place (torch's version counter)."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    return tuple((name, id(t), t.data_ptr(), t._version) for name, t in tensors)


def model_fingerprint(model) -> str:
    """sha256 of the config and a cheap digest of every parameter and buffer (name, shape, dtype, sum,
    absolute sum and a strided sample of the values): any change of the weights changes it. Memoised per
    model object until a tensor is replaced or modified in place, so a cache hit costs no pass over weights."""
    token = (_state_token(model), model.config.to_json_string(use_diff=False))
    with _MEMO_LOCK:
        memo = _MEMO.get(model)
        if memo is not None and memo[0] == token:
            return memo[1]
    fingerprint = _digest(model)
    with _MEMO_LOCK:
        _MEMO[model] = (token, fingerprint)
    return fingerprint


def _digest(model) -> str:
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            flat = tensor.detach().reshape(-1)
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            if flat.numel() == 0:
                continue
            as_float = flat.double() if flat.is_floating_point() else flat.long().double()
            stride = max(1, flat.numel() // _SAMPLE)
            sample = as_float[::stride].cpu().numpy().tobytes()
            digest.update(f"{float(as_float.sum())!r}|{float(as_float.abs().sum())!r}".encode())
            digest.update(sample)
    return digest.hexdigest()


def batches_fingerprint(batches: list[dict]) -> str:
    """sha256 of every tensor (key, shape, dtype, bytes) in every batch, in order."""
    digest = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            if isinstance(value, torch.Tensor):
                digest.update(f"{key}|{tuple(value.shape)}|{value.dtype}".encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(model_fp: str, data_fp: str, metric: str, options: dict) -> str:
    """Hex key of one cached statistic; `options` must be JSON-serialisable."""
    record = {"v": CACHE_VERSION, "model": model_fp, "data": data_fp, "metric": metric, "options": options,
              "versions": {k: v for k, v in library_versions().items() if k != "python"}}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def load_cached(key: str) -> torch.Tensor | None:
    """The cached tensor for `key`, or None (missing or unreadable entries are misses)."""
    path = cache_dir("scores") / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        return load(path.read_bytes())["score"]
    except (OSError, KeyError, SafetensorError):  # a damaged entry is a miss; the next store rewrites it
        return None


def store_cached(key: str, tensor: torch.Tensor) -> None:
    """Write `tensor` for `key` atomically."""
    atomic_write_bytes(cache_dir("scores") / f"{key}.safetensors", save({"score": tensor.detach().cpu().contiguous()}))
