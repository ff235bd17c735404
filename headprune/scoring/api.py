"""Scoring heads: `score_heads` / `score_many` (cached on disk) and per-example `contributions` (bootstrap).

Data-dependent metrics are built from per-example contributions, which also feed the bootstrap in
`headprune.scoring.agreement`. Metrics that share a pass are computed together: `gradient` + `fisher` one
backward pass, the attention metrics one attention pass. Results are cached on disk (`headprune.scoring.cache`)
unless the caller's context intervenes on the model (then they are not the model's own scores).
"""
from __future__ import annotations

import torch

from ..core import distributed
from ..core.errors import UserError
from ..core.progress import Progress, parts, report
from ..model.intervene import active
from ..model.layout import to_keep_tensor
from ..sources.batches import limit_examples
from .ablation import ablation_statistic
from .attention import attention_contributions
from .cache import (
    batches_fingerprint,
    cache_key,
    load_cached,
    model_fingerprint,
    store_cached,
)
from .gradient import gate_gradient_contributions
from .norm import norm_contributions
from .registry import (
    ATTENTION_METRICS,
    GRADIENT_METRICS,
    METRICS,
    Contributions,
    check_metric,
    finish_scores,
    scored_heads,
)
from .weights import magnitude_statistic, random_statistic


def _uses_data(metric: str) -> bool:
    return METRICS[metric].needs not in ("weights", "none")


def contributions(model, batches, metric: str, *, keep=None, seed: int = 0,
                  progress: Progress | None = None) -> Contributions:
    """Per-example contributions of `metric` (metrics without examples give one row)."""
    check_metric(metric)
    if metric in GRADIENT_METRICS:
        return gate_gradient_contributions(model, batches, keep, progress)[metric]
    if metric in ATTENTION_METRICS:
        return attention_contributions(model, batches, keep, progress)[metric]
    if metric == "norm":
        return norm_contributions(model, batches, keep, progress)
    if metric == "ablation":
        return ablation_statistic(model, batches, keep, progress, per_example=True)
    raw = magnitude_statistic(model) if metric == "magnitude" else random_statistic(model, seed)
    return Contributions(raw[None], torch.ones(1, dtype=torch.float64))


def _compute(model, batches, group: list[str], keep: torch.Tensor, seed: int,
             progress: Progress | None) -> dict[str, torch.Tensor]:
    """Raw statistics of one group of metrics that share a pass."""
    first = group[0]
    if first in GRADIENT_METRICS:  # under torchrun: each process scores a shard, the sums are all-reduced
        found = gate_gradient_contributions(model, distributed.shard(batches), keep, progress)
        return {m: distributed.aggregate_all(found[m]) for m in group}
    if first in ATTENTION_METRICS:
        found = attention_contributions(model, batches, keep, progress)
        return {m: found[m].aggregate() for m in group}
    if first == "ablation":
        return {first: ablation_statistic(model, batches, keep, progress)}
    if first == "norm":
        return {first: norm_contributions(model, batches, keep, progress).aggregate()}
    if first == "magnitude":
        return {first: magnitude_statistic(model)}
    return {first: random_statistic(model, seed)}


def _groups(metrics: list[str]) -> list[list[str]]:
    """Metrics grouped by the pass they share, in a stable order."""
    groups = [[m for m in metrics if m in shared] for shared in (GRADIENT_METRICS, tuple(ATTENTION_METRICS))]
    groups = [g for g in groups if g]
    return groups + [[m] for m in metrics if m not in GRADIENT_METRICS and m not in ATTENTION_METRICS]


def _cache_keys(model, batches, metrics: list[str], keep: torch.Tensor, seed: int) -> dict[str, str]:
    """Disk-cache key per metric: model weights, data, metric, mask, seed (random only), library versions."""
    model_fp = model_fingerprint(model)
    data_fp = batches_fingerprint(batches) if any(_uses_data(m) for m in metrics) else ""
    keys = {}
    for metric in metrics:
        data = _uses_data(metric)
        options = {"keep": keep.int().flatten().tolist() if data else None,
                   "seed": seed if metric == "random" else None}
        keys[metric] = cache_key(model_fp, data_fp if data else "", metric, options)
    return keys


def score_many(model, batches, metrics, *, keep=None, normalise_layers: bool = False, global_minmax: bool = False,
               max_examples: int | None = None, seed: int = 0, progress: Progress | None = None,
               cache: bool = True, raw: bool = False) -> dict[str, torch.Tensor]:
    """Several metrics at once, sharing passes. Arguments as in `score_heads`; returns {metric: (L, H) float32}."""
    metrics = list(dict.fromkeys(metrics))
    for metric in metrics:
        check_metric(metric)
    if raw and (normalise_layers or global_minmax):
        raise UserError("raw=True returns the unnormalised statistic; turn off normalise_layers and global_minmax")
    keep_t = to_keep_tensor(keep, model)
    scored = scored_heads(model, keep_t)
    batches = limit_examples(batches, max_examples) if any(_uses_data(m) for m in metrics) else []
    cache = cache and not active(model)  # under the caller's own mask or weights these are not the model's scores
    keys = _cache_keys(model, batches, metrics, keep_t, seed) if cache else {}
    raws = {m: hit for m in metrics if cache and (hit := load_cached(keys[m])) is not None}
    groups = _groups([m for m in metrics if m not in raws])
    for group, part in zip(groups, parts(progress, len(groups))):
        for metric, value in _compute(model, batches, group, keep_t, seed, part).items():
            raws[metric] = value.double()
            if cache:
                store_cached(keys[metric], raws[metric])
    report(progress, 1.0, "scores ready")
    if raw:
        return {m: raws[m].masked_fill(~scored, float("nan")).float() for m in metrics}
    return {m: finish_scores(raws[m], m, scored, normalise_layers=normalise_layers, global_minmax=global_minmax)
            for m in metrics}


def score_heads(model, batches, metric: str, *, keep=None, normalise_layers: bool = False,
                global_minmax: bool = False, max_examples: int | None = None, seed: int = 0,
                progress: Progress | None = None, cache: bool = True, raw: bool = False) -> torch.Tensor:
    """Importance of every head: float32 (L, H) = `head_grid(model)`, higher = more important, NaN for
    heads not scored (keep=False or physically pruned).

    metric: a key of `METRICS`. keep: mask under which to score (iterative pruning). max_examples: use the
    first N examples in batch order. seed: only `random` uses it. progress(fraction, message). cache: read
    and write the disk cache. raw=True: the metric's raw statistic instead (e.g. entropy in nats, not its
    negation), no normalisation — for hover text.
    """
    return score_many(model, batches, [metric], keep=keep, normalise_layers=normalise_layers,
                      global_minmax=global_minmax, max_examples=max_examples, seed=seed, progress=progress,
                      cache=cache, raw=raw)[metric]
