"""The metric registry: what each importance metric is, how it is signed, and the per-example form they share.

Every score map has the shape `head_grid(model)` = (L, H) over original head ids, float32, and higher always
means more important. Heads that are not scored — masked out by `keep` or physically pruned — are NaN. Each
metric is first computed as a *raw statistic* (what the paper defines, e.g. attention entropy in nats) and
turned into a score as `sign * raw` (entropy has sign -1: a focused head counts as more important), then
optionally normalised (`finish_scores`).

Adding a metric: a `MetricSpec` here (name, description, citation, what it needs, sign) and its computation
in a module of this package, dispatched in `headprune.scoring.api.contributions` / `score_many`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import UserError
from ..core.types import Reduce
from ..model.layout import present_heads, to_keep_tensor


@dataclass(frozen=True)
class MetricSpec:
    """One importance metric. `needs`: what it computes from ("gradient", "attention", "forward",
    "weights", "none"); `sign`: score = sign * raw statistic; `raw_label`: what the raw statistic is
    (for hover text); `teaching`: shown to explain a pitfall, not to prune with."""

    name: str
    description: str
    citation: str
    needs: str
    raw_label: str
    sign: float = 1.0
    teaching: bool = False


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("gradient", "Expected absolute gradient of the loss with respect to a multiplicative gate on the "
               "head's output, E_x |dL(x)/dxi_h| (absolute value per example, then the mean over examples).",
               "Michel, Levy & Neubig 2019, Are Sixteen Heads Really Better than One?", "gradient",
               "mean |dL/dgate| per example"),
    MetricSpec("fisher", "Empirical Fisher information of the head gate, sum over examples of (dL(x)/dxi_h)^2; "
               "computed in the same backward pass as `gradient`.",
               "Kwon et al. 2022, A Fast Post-Training Pruning Framework for Transformers", "gradient",
               "sum of (dL/dgate)^2 over examples"),
    MetricSpec("ablation", "Exact leave-one-out: mean loss with only this head masked minus the mean loss of the "
               "model as given (under `keep`), over all examples. Positive = removing it hurts.",
               "Michel et al. 2019 (leave-one-out ablation)", "forward", "loss increase when removed"),
    MetricSpec("entropy", "Mean entropy of the head's attention rows over non-pad query and key tokens. Low = "
               "focused; the score is -entropy so focused heads rank higher.",
               "Clark et al. 2019; HF bertology example", "attention", "mean attention entropy (nats)", sign=-1.0),
    MetricSpec("confidence", "Mean over query tokens of the head's largest attention weight; confident heads "
               "are the ones that matter most.", "Voita et al. 2019, Analyzing Multi-Head Self-Attention",
               "attention", "mean max attention weight"),
    MetricSpec("norm", "Mean over tokens of the norm of the head's contribution to the attention output, "
               "||sum_j alpha_ij v_j W_O,h|| (weight times transformed value, not the weight alone).",
               "Kobayashi et al. 2020, Attention is Not Only a Weight", "forward", "mean output norm"),
    MetricSpec("magnitude", "Weight norm of the head's slices: sqrt(||W_q,h||^2 + (||W_k,g||^2 + ||W_v,g||^2)/|g| "
               "+ ||W_O,h||^2); with grouped-query attention the shared key/value head of group g is divided "
               "evenly among its |g| query heads (|g| = 1 otherwise).", "weight-magnitude pruning baseline",
               "weights", "weight norm"),
    MetricSpec("random", "Uniform random scores from a seeded generator: the baseline every metric must beat.",
               "baseline", "none", "uniform random"),
    MetricSpec("attention_mean", "TEACHING EXAMPLE, not a useful metric: the mean absolute attention weight over "
               "non-pad keys. Every attention row sums to 1 over its keys, so the mean is 1/#keys, identical "
               "for every head; any difference you see is rounding.", "(counter-example)", "attention",
               "mean |attention weight|", teaching=True),
)}

GRADIENT_METRICS = ("gradient", "fisher")
ATTENTION_METRICS = {"entropy": "entropy", "confidence": "confidence", "attention_mean": "mean_abs"}


@dataclass
class Contributions:
    """Per-example parts of a metric: raw statistic = sum(values) / sum(weights) ("mean") or sum(values) ("sum").

    values: (N, L, H) float64, NaN for unscored heads; weights: (N,) float64 (items per example).
    """

    values: torch.Tensor
    weights: torch.Tensor
    reduce: Reduce = "mean"

    def aggregate(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Raw statistic (L, H) over all examples, or over `index` (with repeats, for the bootstrap)."""
        values, weights = (self.values, self.weights) if index is None else (self.values[index], self.weights[index])
        total = values.nan_to_num(0.0).sum(0)
        return total if self.reduce == "sum" else total / weights.sum().clamp(min=1e-300)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}", option="metric")


def scored_heads(model, keep=None) -> torch.Tensor:
    """Bool (L, H): heads that get a score — kept by `keep` and physically present."""
    scored = to_keep_tensor(keep, model).clone()
    present = torch.zeros_like(scored)
    for layer, heads in enumerate(present_heads(model)):
        present[layer, heads] = True
    return scored & present


def finish_scores(raw: torch.Tensor, metric: str, scored: torch.Tensor, *, normalise_layers: bool = False,
                  global_minmax: bool = False) -> torch.Tensor:
    """Raw statistic (L, H) -> score float32: sign, NaN for unscored heads, then the optional normalisations.

    normalise_layers: divide each layer's scores by their l2 norm (Michel et al. 2019; HF bertology).
    global_minmax: then rescale all scores to [0, 1] by the global min and max (HF bertology); a constant
    map becomes all zeros. Both ignore NaN entries.
    """
    score = (METRICS[metric].sign * raw.double()).masked_fill(~scored, float("nan"))
    if normalise_layers:
        norm = score.nan_to_num(0.0).square().sum(-1, keepdim=True).sqrt()  # (L, 1)
        score = score / torch.where(norm > 0, norm, torch.ones_like(norm))
    if global_minmax and scored.any():
        finite = score[scored]
        low, high = finite.min(), finite.max()
        score = (score - low) / (high - low) if high > low else score - low
    return score.float()

