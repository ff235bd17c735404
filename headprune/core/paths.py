"""Where headprune keeps its caches (built presets, scores): `HEADPRUNE_CACHE`, else the user's cache folder."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Return (and create) `$HEADPRUNE_CACHE/<parts>`, default `~/.cache/headprune/<parts>`."""
    root = os.environ.get("HEADPRUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "headprune"
    )
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
