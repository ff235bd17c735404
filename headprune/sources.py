"""Where models and data come from — one import for the dashboard and the CLI.

The work is done in small modules: `data` (tweets, files, Hub datasets), `batches` (tokenise once,
dynamic padding), `models` (presets, folders, Hub ids, GGUF) and `presets` (the offline defaults).
"""
from __future__ import annotations

from .batches import make_batches, pad_token_id
from .data import SPLITS, TWEET_LABELS, data_fingerprint, load_data, load_tweets, normalise_split
from .models import LoadedModel, load_model
from .presets import PRESETS, build_preset, load_preset, preset_meta

__all__ = [
    "PRESETS", "SPLITS", "TWEET_LABELS", "LoadedModel", "build_preset", "data_fingerprint", "load_data",
    "load_model", "load_preset", "load_tweets", "make_batches", "normalise_split", "pad_token_id", "preset_meta",
]
