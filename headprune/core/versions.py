"""Versions that decide whether a result reproduces, recorded with every artifact and cache entry."""
from __future__ import annotations

import platform
from typing import Mapping

__version__ = "0.2.0"


def library_versions(extra: Mapping[str, str] | None = None) -> dict:
    """python, torch, transformers and headprune versions (+ `extra`)."""
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "headprune": __version__, **dict(extra or {})}
