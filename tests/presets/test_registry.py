"""Preset names and where they are cached (headprune.presets.registry)."""
from __future__ import annotations

import pytest

from headprune.presets import PRESETS, build_preset, preset_dir, preset_meta


def test_preset_names_and_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path))
    assert set(PRESETS) == {"minilm-tweets", "smollm2-135m"}
    assert all(isinstance(v, str) and v for v in PRESETS.values())
    assert preset_dir("minilm-tweets") == tmp_path / "presets" / "minilm-tweets"
    assert preset_meta("minilm-tweets") is None
    with pytest.raises(ValueError, match="unknown preset 'bert-huge'.*minilm-tweets"):
        build_preset("bert-huge")
