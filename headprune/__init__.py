"""headprune: find, test and remove redundant attention heads in Transformer models.

The public API, re-exported here; everything is plain torch / transformers, no UI.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .arch import SUPPORTED_FAMILIES, UnsupportedModelError, family_of, head_grid, task_of
from .mask import gated, masked, read_mask, write_mask
from .prune import export_masked, kept_mask, load_pruned, prune, save_pruned
from .units import kv_cache_bytes_per_token, kv_groups, to_units

__all__ = [
    "SUPPORTED_FAMILIES",
    "UnsupportedModelError",
    "export_masked",
    "family_of",
    "gated",
    "head_grid",
    "kept_mask",
    "kv_cache_bytes_per_token",
    "kv_groups",
    "load_pruned",
    "masked",
    "prune",
    "read_mask",
    "save_pruned",
    "task_of",
    "to_units",
    "write_mask",
]
