"""headprune: find, test and remove redundant attention heads in Transformer models.

The stages, in the order data flows (each a subpackage; lower ones never import higher ones):
core → model → sources → evaluation → scoring | recovery → search | presets | deploy → workbench → cli,
plus `figures` (pure plotly builders). The public API is re-exported here, imported on first use (PEP 562),
so `import headprune` stays quick.
"""
from __future__ import annotations

import importlib

from .core.errors import (
    InternalError,
    OutputExistsError,
    UnsupportedModelError,
    UserError,
)
from .core.versions import __version__

_LAZY = {
    # model
    "head_grid": "model.layout", "task_of": "model.layout", "kept_mask": "model.layout",
    "family_of": "model.adapters", "supported_families": "model.adapters",
    "masked": "model.intervene", "gated": "model.intervene",
    "prune": "model.surgery", "save_pruned": "model.storage", "load_pruned": "model.storage",
    "export_masked": "model.storage", "read_mask": "model.schema", "write_mask": "model.schema",
    "read_scores": "model.schema", "write_scores": "model.schema",
    "to_units": "model.units", "kv_groups": "model.units", "kv_cache_bytes_per_token": "model.units",
    # sources and presets
    "load_data": "sources.data", "load_tweets": "sources.tweets", "make_batches": "sources.batches",
    "load_model": "presets",
    # evaluation
    "evaluate": "evaluation.loop", "LiveEvaluator": "evaluation.live", "measure": "evaluation.latency",
    "flops_per_token": "evaluation.cost",
    # scoring
    "score_heads": "scoring.api", "score_many": "scoring.api", "METRICS": "scoring.registry",
    "compare_metrics": "scoring.agreement", "bootstrap_ranks": "scoring.agreement", "head_roles": "scoring.roles",
    # search and recovery
    "least_important": "search.masks", "iterative_scores": "search.iterative", "prune_curve": "search.curves",
    "random_baseline": "search.curves", "budget_mask": "search.budget", "target_mask": "search.target",
    "lsq_recover": "recovery.lsq", "Recovery": "recovery.lsq", "FinetuneSettings": "recovery.finetune",
    # deploy: ONNX Runtime, runtime-safe shapes
    "export_onnx": "deploy.export", "compare_runtimes": "deploy.latency", "loads_in": "deploy.shapes",
    "round_to_uniform": "deploy.shapes",
    # the shared engine object
    "Workbench": "workbench", "open_workload": "workbench",
}


def __getattr__(name: str):
    """Import the public functions on first use (PEP 562)."""
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headprune' has no attribute {name!r}")


__all__ = ["InternalError", "OutputExistsError", "UnsupportedModelError", "UserError", "__version__", *_LAZY]
