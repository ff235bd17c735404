"""core.paths: the cache folder comes from HEADPRUNE_CACHE, else XDG_CACHE_HOME, else ~/.cache, and is created."""
from __future__ import annotations

from pathlib import Path

from headprune.core.paths import cache_dir


def test_headprune_cache_wins_and_parts_are_created(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "hp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = cache_dir("scores", "abc")
    assert path == tmp_path / "hp" / "scores" / "abc" and path.is_dir()
    assert cache_dir() == tmp_path / "hp"
    assert cache_dir("scores", "abc") == path  # an existing folder is fine
    assert not (tmp_path / "xdg").exists()


def test_xdg_cache_home_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HEADPRUNE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("logs") == tmp_path / "xdg" / "headprune" / "logs"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Path.home() == tmp_path / "home"
    assert cache_dir("logs") == tmp_path / "home" / ".cache" / "headprune" / "logs"
    assert (tmp_path / "home" / ".cache" / "headprune" / "logs").is_dir()


def test_empty_variables_count_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPRUNE_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("presets") == tmp_path / ".cache" / "headprune" / "presets"
