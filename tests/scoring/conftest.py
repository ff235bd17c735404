"""Scores are cached on disk: each test gets its own cache folder."""
import pytest


@pytest.fixture(autouse=True)
def _score_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
