"""headprune: find, test and remove redundant attention heads in Transformer models.

The public API, re-exported here; everything is plain torch / transformers, no UI. Heavier parts (scoring,
cost, search, recovery) are imported on first use, so `import headprune` stays quick.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .arch import SUPPORTED_FAMILIES, UnsupportedModelError, family_of, head_grid, task_of
from .evaluate import evaluate
from .mask import gated, masked, read_mask, write_mask
from .prune import export_masked, kept_mask, load_pruned, prune, save_pruned
from .units import kv_cache_bytes_per_token, kv_groups, to_units

_LAZY = {
    "score_heads": "score",
    "METRICS": "score",
    "compare_metrics": "agreement",
    "bootstrap_ranks": "agreement",
    "head_roles": "roles",
    "LiveEvaluator": "live",
    "measure": "cost",
    "flops_per_token": "cost",
    "least_important": "search",
    "budget_mask": "search",
    "iterative_scores": "search",
    "target_mask": "search",
    "prune_curve": "search",
    "random_baseline": "search",
    "lsq_recover": "recover",
    "Recovery": "recover",
    "load_model": "models",
    "load_data": "data",
    "load_tweets": "data",
    "make_batches": "batches",
}


def __getattr__(name: str):
    """Import the heavier public functions on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headprune' has no attribute {name!r}")


__all__ = [
    "SUPPORTED_FAMILIES",
    "UnsupportedModelError",
    "evaluate",
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
    *_LAZY,
]
