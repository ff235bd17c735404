"""Output paths are checked before any work (placeholder until `headprune.core.files` lands)."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import OutputExistsError


def check_output(path, kind: str, *, overwrite: bool = False, protect=()) -> Path:
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another path, or allow replacing it")
    return path
