"""Building a preset (headprune.presets.build): an interrupted build leaves no cache, and (slow) a real
minilm-tweets build on a small slice, cached and reloaded."""
from __future__ import annotations

import json
import time

import pytest
import torch

from headprune.presets import build_preset, preset_dir, preset_meta
from headprune.sources.batches import make_batches
from headprune.sources.tweets import load_tweets


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path))

    def interrupt(fraction, message):
        if "fine-tuning" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_preset("minilm-tweets", train_limit=32, eval_limit=16, progress=interrupt)
    assert preset_meta("minilm-tweets") is None
    assert not preset_dir("minilm-tweets").exists()
    assert not [p for p in (tmp_path / "presets").iterdir() if not p.name.endswith(".lock")]


@pytest.mark.slow
def test_minilm_preset_builds_caches_and_reloads(tmp_path, monkeypatch):
    from headprune.evaluation.loop import evaluate
    from headprune.presets import load_model

    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path))
    seen = []
    folder = build_preset("minilm-tweets", train_limit=64, eval_limit=32, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    meta = json.loads((folder / "headprune_preset.json").read_text())
    assert meta["recipe"]["train_limit"] == 64 and meta["seed"] == 0
    assert meta["data"]["train_examples"] == 64 and len(meta["data"]["file_sha256"]) == 64
    assert {"accuracy", "macro_f1", "loss", "n"} <= set(meta["test"]) and meta["build_seconds"] > 0
    assert {"torch", "transformers"} <= set(meta["versions"])
    assert (folder / "model.safetensors").is_file()
    assert build_preset("minilm-tweets", train_limit=64, eval_limit=32) == folder  # same recipe: cached

    start = time.perf_counter()
    loaded = load_model("minilm-tweets")
    assert time.perf_counter() - start < 30
    assert (loaded.task, loaded.source, loaded.model_id) == ("classification", "preset", "minilm-tweets")
    assert loaded.label_names == ["negative", "neutral", "positive"]
    from headprune.model.layout import head_grid

    assert head_grid(loaded.model) == (6, 12)
    again = load_model("minilm-tweets")
    batches = make_batches(loaded.tokenizer, load_tweets("test", limit=32), "classification")
    first, second = evaluate(loaded.model, batches), evaluate(again.model, batches)
    assert first["accuracy"] == second["accuracy"] == pytest.approx(meta["test"]["accuracy"])
    inputs = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**inputs).logits, again.model(**inputs).logits)
