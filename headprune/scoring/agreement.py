"""How far to trust a score map: rank agreement between metrics, and bootstrap rank intervals per head.

`compare_metrics` gives Spearman and Kendall rank correlations between score maps over the heads all of
them scored (a map constant up to rounding, like `attention_mean`, correlates with nothing: NaN).
`bootstrap_ranks` resamples examples (with replacement, seeded) from the per-example
contributions of one metric, computed once, and reports each head's rank interval (rank 1 = most important).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..core.errors import UserError
from ..core.progress import Progress, report, sub
from ..model.layout import to_keep_tensor
from ..sources.batches import limit_examples
from .api import contributions
from .registry import check_metric, finish_scores, scored_heads

UNCERTAIN_FRACTION = 0.25  # a head is "uncertain" when its rank interval spans more than this share of the heads
CONSTANT_RTOL = 1e-6  # a map whose spread is below this fraction of its magnitude is constant up to rounding


def compare_metrics(score_maps: dict[str, torch.Tensor]) -> dict:
    """Rank correlations between score maps (each (L, H)), over the heads every map scored (finite).

    Returns {"spearman": DataFrame, "kendall": DataFrame (metric x metric), "n_heads": int}. A map constant
    up to rounding (spread <= CONSTANT_RTOL x magnitude, e.g. `attention_mean`) has no ranking: its
    correlations are NaN (its diagonal too) instead of correlations of float noise.
    """
    names = list(score_maps)
    if not names:
        raise UserError("compare_metrics needs at least one score map")
    flat = {name: torch.as_tensor(score_maps[name]).double().flatten().numpy() for name in names}
    sizes = {v.size for v in flat.values()}
    if len(sizes) != 1:
        raise UserError("all score maps must have the same shape (one model's head grid)")
    common = np.logical_and.reduce([np.isfinite(v) for v in flat.values()])
    constant = {name for name, v in flat.items() if common.any()
                and np.ptp(v[common]) <= CONSTANT_RTOL * np.abs(v[common]).max()}
    spearman = pd.DataFrame(np.nan, index=names, columns=names)
    kendall = pd.DataFrame(np.nan, index=names, columns=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN correlation, which is the answer
        for i, a in enumerate(names):
            for b in names[i:]:
                x, y = flat[a][common], flat[b][common]
                if len(x) < 2 or a in constant or b in constant:
                    continue
                spearman.loc[a, b] = spearman.loc[b, a] = stats.spearmanr(x, y).statistic
                kendall.loc[a, b] = kendall.loc[b, a] = stats.kendalltau(x, y).statistic
    return {"spearman": spearman, "kendall": kendall, "n_heads": int(common.sum())}


def rank_heads(score: torch.Tensor) -> torch.Tensor:
    """Ranks (L, H) float64, 1 = highest score, ties share their average rank, NaN for NaN scores."""
    flat = score.double().flatten().numpy()
    ranks = np.full(flat.shape, np.nan)
    finite = np.isfinite(flat)
    ranks[finite] = stats.rankdata(-flat[finite], method="average")
    return torch.from_numpy(ranks).reshape(score.shape)


def bootstrap_ranks(model, batches, metric: str, *, n_boot: int = 20, seed: int = 0, keep=None,
                    max_examples: int | None = None, level: float = 0.9,
                    uncertain_fraction: float = UNCERTAIN_FRACTION, progress: Progress | None = None) -> dict:
    """Bootstrap rank intervals of `metric`'s heads over example subsets.

    Per-example contributions are computed once; each of `n_boot` seeded resamples (N examples drawn with
    replacement) is re-aggregated and ranked. Returns (L, H) tensors: `rank` (on all examples), `low` and
    `high` (the (1-level)/2 and (1+level)/2 percentiles: 5th/95th by default), `uncertain` (bool: interval
    wider than `uncertain_fraction` of the scored heads); NaN/False for unscored heads. Metrics that use no
    examples (magnitude, random) get zero-width intervals.
    """
    check_metric(metric)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise UserError(f"n_boot must be a whole number >= 2, got {n_boot!r}")
    if not 0 < level < 1:
        raise UserError(f"level must lie strictly between 0 and 1, got {level!r}")
    batches = limit_examples(batches, max_examples)
    scored = scored_heads(model, keep)
    parts = contributions(model, batches, metric, keep=to_keep_tensor(keep, model), seed=seed,
                          progress=sub(progress, 0.0, 0.9))
    rank = rank_heads(finish_scores(parts.aggregate(), metric, scored))
    generator = torch.Generator().manual_seed(int(seed))
    n = parts.values.shape[0]
    boots = []
    for b in range(n_boot):
        index = torch.randint(0, n, (n,), generator=generator)
        boots.append(rank_heads(finish_scores(parts.aggregate(index), metric, scored)))
        report(progress, 0.9 + 0.1 * (b + 1) / n_boot, f"bootstrap {b + 1}/{n_boot}")
    boots_t = torch.stack(boots)  # (n_boot, L, H)
    low = torch.quantile(boots_t, (1 - level) / 2, dim=0)
    high = torch.quantile(boots_t, (1 + level) / 2, dim=0)
    uncertain = ((high - low) > uncertain_fraction * max(int(scored.sum()), 1)) & scored
    return {"rank": rank, "low": low, "high": high, "uncertain": uncertain}
