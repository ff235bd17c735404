"""Head-importance metrics: a registry of scorers and `score_heads` / `score_many`.

Every score map has the shape `head_grid(model)` = (L, H) over original head ids, float32, and higher
always means more important. Heads that are not scored — masked out by `keep` or physically pruned —
are NaN (the dashboard draws NaN grey). Each metric is first computed as a *raw statistic* (what the
paper defines, e.g. attention entropy in nats) and turned into a score as `sign * raw` (entropy has
sign -1: a focused, low-entropy head counts as more important), then optionally normalised.

Data-dependent metrics are built from per-example contributions (`contributions`), which also feed the
bootstrap in `headprune.agreement`. Results are cached on disk (`headprune.score_cache`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from . import arch, distributed
from .attention import attention_statistics, batch_attentions, is_causal
from .evaluate import accumulate, batch_metrics, finalise, model_device, per_example_loss, to_device
from .mask import gated, masked
from .prefix import PrefixCache, capture_out_inputs, forward_logits
from .score_cache import batches_fingerprint, cache_key, load_cached, model_fingerprint, store_cached

Progress = Callable[[float, str], None]


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
    reduce: str = "mean"

    def aggregate(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Raw statistic (L, H) over all examples, or over `index` (with repeats, for the bootstrap)."""
        values, weights = (self.values, self.weights) if index is None else (self.values[index], self.weights[index])
        total = values.nan_to_num(0.0).sum(0)
        return total if self.reduce == "sum" else total / weights.sum().clamp(min=1e-300)


# ------------------------------------------------------------------------------------------ helpers
def limit_examples(batches: list[dict], max_examples: int | None) -> list[dict]:
    """The first `max_examples` examples in batch order (the last batch sliced), or all of them."""
    batches = list(batches)
    if not batches:
        raise ValueError("nothing to score: no batches")
    if max_examples is None:
        return batches
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"max examples must be a positive whole number, got {max_examples!r}")
    out, left = [], max_examples
    for batch in batches:
        size = int(batch["input_ids"].shape[0])
        out.append(batch if size <= left else {k: v[:left] for k, v in batch.items()})
        left -= min(size, left)
        if left == 0:
            break
    return out


def scored_heads(model, keep=None) -> torch.Tensor:
    """Bool (L, H): heads that get a score — kept by `keep` and physically present."""
    scored = arch.to_keep_tensor(keep, model).clone()
    present = torch.zeros_like(scored)
    for layer, heads in enumerate(arch.present_heads(model)):
        present[layer, heads] = True
    return scored & present


@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _report(progress: Progress | None, start: float, span: float, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(1.0, start + span * fraction), message)


def _o_heads(model, layer: int, n_present: int) -> torch.Tensor:
    """Layer's output projection as (H_present, head_dim, D_out): head h's slice maps its output to the model."""
    weight = arch.in_out_weight(arch.out_projections(model)[layer]).detach()  # (H_present*dh, D_out)
    return weight.reshape(n_present, weight.shape[0] // n_present, weight.shape[1])


# ---------------------------------------------------------------------------------------- the passes
def gate_gradient_contributions(model, batches, keep=None, progress=None) -> dict[str, Contributions]:
    """`gradient` and `fisher` from one backward pass per batch (Michel et al. 2019; Kwon et al. 2022).

    A per-example gate tensor (L, B, H) set to `keep` and requiring grad multiplies every head's output
    (`headprune.mask.gated`); the per-example losses are summed, so `torch.autograd.grad(sum, gates)` gives
    each example its own dL(x)/dxi_h, and no parameter gradient is computed.
    """
    keep = arch.to_keep_tensor(keep, model)
    task, device = arch.task_of(model), model_device(model)
    grads, weights = [], []
    with _eval_mode(model):
        for index, batch in enumerate(batches):
            batch = to_device(batch, device)
            size = int(batch["input_ids"].shape[0])
            gates = keep.float().to(device)[:, None, :].expand(-1, size, -1).contiguous().requires_grad_(True)  # (L, B, H)
            with torch.enable_grad(), gated(model, gates):
                losses, count = per_example_loss(forward_logits(model, batch), batch["labels"], task)
                (grad,) = torch.autograd.grad(losses.sum(), gates)
            grads.append(grad.detach().double().permute(1, 0, 2).cpu())  # (B, L, H)
            weights.append((count > 0).double())
            _report(progress, 0, 1, (index + 1) / len(batches), f"gate gradients: batch {index + 1}/{len(batches)}")
    grad, weight = torch.cat(grads), torch.cat(weights)  # (N, L, H), (N,)
    return {"gradient": Contributions(grad.abs(), weight), "fisher": Contributions(grad.square(), weight, "sum")}


def attention_contributions(model, batches, keep=None, progress=None) -> dict[str, Contributions]:
    """`entropy`, `confidence` and `attention_mean` per example from one eager-attention pass under `keep`."""
    n_layers, n_heads = arch.head_grid(model)
    present, causal = arch.present_heads(model), is_causal(model)
    out = {name: [] for name in ATTENTION_METRICS}
    weights = []
    with _eval_mode(model), masked(model, keep):
        for index, batch in enumerate(batches):
            size = int(batch["input_ids"].shape[0])
            per_metric = {name: torch.full((size, n_layers, n_heads), float("nan"), dtype=torch.float64) for name in out}
            for layer, attn in enumerate(batch_attentions(model, batch)):
                if attn is None:
                    continue
                stats = attention_statistics(attn, batch.get("attention_mask"), causal=causal)
                for name, key in ATTENTION_METRICS.items():
                    per_metric[name][:, layer, present[layer]] = stats[key].double()
            for name in out:
                out[name].append(per_metric[name])
            mask = batch.get("attention_mask", torch.ones(size, 1))
            weights.append((mask.sum(-1) > 0).double())
            _report(progress, 0, 1, (index + 1) / len(batches), f"attention: batch {index + 1}/{len(batches)}")
    weight = torch.cat(weights)
    return {name: Contributions(torch.cat(parts), weight) for name, parts in out.items()}


def norm_contributions(model, batches, keep=None, progress=None) -> Contributions:
    """Kobayashi et al. 2020: per example, mean over non-pad tokens of ||sum_j alpha_ij v_j W_O,h||.

    The head's output sum_j alpha_ij v_j is its slice of the output projection's input, so a temporary
    forward pre-hook (`prefix.capture_out_inputs`, removed in `finally`) captures that input x (B, T, H*dh) and
    ||x_h W_O,h||^2 = x_h G_h x_h^T with the Gram matrix G_h = W_O,h W_O,h^T (dh, dh).
    """
    n_layers, n_heads = arch.head_grid(model)
    present = arch.present_heads(model)
    grams = []
    for layer in range(n_layers):
        heads = _o_heads(model, layer, len(present[layer])) if present[layer] else None
        grams.append(None if heads is None else heads.float() @ heads.float().transpose(1, 2))  # (H, dh, dh)
    parts = []
    with _eval_mode(model), masked(model, keep), capture_out_inputs(model) as captured:
        for index, batch in enumerate(batches):
            for calls in captured:
                calls.clear()
            with torch.inference_mode():
                forward_logits(model, to_device(batch, model_device(model)))
            size, length = batch["input_ids"].shape
            mask = batch.get("attention_mask", torch.ones(size, length)).float()  # (B, T)
            values = torch.full((size, n_layers, n_heads), float("nan"), dtype=torch.float64)
            for layer, calls in enumerate(captured):
                hp = len(present[layer])
                if hp == 0 or not calls:
                    continue
                x = calls[-1]
                heads = x.float().cpu().unflatten(-1, (hp, x.shape[-1] // hp))  # (B, T, H, dh)
                sq = torch.einsum("bthd,hde,bthe->bth", heads, grams[layer], heads).clamp(min=0)  # (B, T, H)
                mean = (sq.sqrt() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, H)
                values[:, layer, present[layer]] = mean.double()
            parts.append(values)
            _report(progress, 0, 1, (index + 1) / len(batches), f"output norms: batch {index + 1}/{len(batches)}")
    values = torch.cat(parts)
    return Contributions(values, torch.ones(values.shape[0], dtype=torch.float64))


def magnitude_statistic(model) -> torch.Tensor:
    """Weight norm per head (L, H) float64, NaN for pruned heads; see METRICS["magnitude"]."""
    adapter = arch.adapter_for(model)
    out = torch.full(arch.head_grid(model), float("nan"), dtype=torch.float64)
    for layer, (block, heads) in enumerate(zip(arch.blocks(model), arch.present_heads(model))):
        hp = len(heads)
        if hp == 0:
            continue
        o = _o_heads(model, layer, hp).double()  # (hp, dh, D)
        dh = o.shape[1]
        if adapter.fused_qkv:
            w = arch.get_path(block, adapter.fused_qkv).weight.detach().double().T  # (3*hp*dh, D)
            q, k, v = w.split(hp * dh)
        else:
            q, k, v = (arch.get_path(block, p).weight.detach().double() for p in (adapter.q, adapter.k, adapter.v))
        q2 = q.reshape(hp, -1).square().sum(-1)  # (hp,)
        n_kv = k.shape[0] // dh
        kv2 = k.reshape(n_kv, -1).square().sum(-1) + v.reshape(n_kv, -1).square().sum(-1)  # (n_kv,)
        group = max(hp // n_kv, 1)
        slot = torch.arange(hp) // group
        out[layer, heads] = (q2 + kv2[slot] / group + o.reshape(hp, -1).square().sum(-1)).sqrt()
    return out


def random_statistic(model, seed: int) -> torch.Tensor:
    """Seeded uniform [0, 1) scores (L, H) float64."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(arch.head_grid(model), generator=generator, dtype=torch.float64)


def _row_sums(logits: torch.Tensor, labels: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example loss sums and item counts (B,), each row through `evaluate.batch_metrics`."""
    parts = [batch_metrics(logits[i:i + 1], labels[i:i + 1], task) for i in range(labels.shape[0])]
    return (torch.tensor([p["loss_sum"] for p in parts], dtype=torch.float64),
            torch.tensor([p["count"] for p in parts], dtype=torch.float64))


def ablation_statistic(model, batches, keep=None, progress=None, *, per_example: bool = False):
    """Exact leave-one-out loss increase per head (L, H) float64, NaN for unscored heads.

    A `PrefixCache` holds every layer's input and attention-core output under `keep`; masking head (l, h)
    re-runs only layers >= l, and within layer l only what follows the attention probabilities (the cache
    replays them). The loss arithmetic is `evaluate.batch_metrics/accumulate/finalise`, so each entry equals
    `evaluate(model, batches, keep without h)["loss"] - evaluate(model, batches, keep)["loss"]`.
    With `per_example=True` returns `Contributions` instead (per-example loss-sum differences, weights =
    items per example), for the bootstrap.
    """
    keep = arch.to_keep_tensor(keep, model)
    scored = scored_heads(model, keep)
    task, device = arch.task_of(model), model_device(model)
    batches = [to_device(b, device) for b in batches]
    with _eval_mode(model):
        cache = PrefixCache(model, batches, keep, contexts=True)
        labels = [b["labels"] for b in batches]
        if per_example:
            dense = [_row_sums(logits, y, task) for logits, y in zip(cache.logits, labels)]
            weights = torch.cat([count for _, count in dense])
            values = torch.full((len(weights), *keep.shape), float("nan"), dtype=torch.float64)
        else:
            total = None
            for logits, y in zip(cache.logits, labels):
                total = accumulate(total, batch_metrics(logits, y, task))
            dense_loss = finalise(total)["loss"]
            values = torch.full(keep.shape, float("nan"), dtype=torch.float64)
        heads = scored.nonzero().tolist()
        for step, (layer, head) in enumerate(heads):
            without = keep.clone()
            without[layer, head] = False
            if per_example:
                rows = [_row_sums(cache.logits_for(i, without, layer), y, task)[0] - dense[i][0]
                        for i, y in enumerate(labels)]
                values[:, layer, head] = torch.cat(rows)
            else:
                total = None
                for i, y in enumerate(labels):
                    total = accumulate(total, batch_metrics(cache.logits_for(i, without, layer), y, task))
                values[layer, head] = finalise(total)["loss"] - dense_loss
            _report(progress, 0, 1, (step + 1) / len(heads), f"ablation: head {step + 1}/{len(heads)}")
    return Contributions(values, weights) if per_example else values


def contributions(model, batches, metric: str, *, keep=None, seed: int = 0, progress=None) -> Contributions:
    """Per-example contributions of `metric` (metrics without examples give one row)."""
    _check_metric(metric)
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


# ---------------------------------------------------------------------------------------- the API
def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


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


def score_many(model, batches, metrics, *, keep=None, normalise_layers: bool = False, global_minmax: bool = False,
               max_examples: int | None = None, seed: int = 0, progress: Progress | None = None,
               cache: bool = True, raw: bool = False) -> dict[str, torch.Tensor]:
    """Several metrics at once, sharing passes: `gradient` + `fisher` one backward pass, the attention
    metrics one eager pass. Arguments as in `score_heads`; returns {metric: (L, H) float32}."""
    metrics = list(dict.fromkeys(metrics))
    for metric in metrics:
        _check_metric(metric)
    if raw and (normalise_layers or global_minmax):
        raise ValueError("raw=True returns the unnormalised statistic; turn off normalise_layers and global_minmax")
    keep_t = arch.to_keep_tensor(keep, model)
    scored = scored_heads(model, keep_t)
    uses_data = any(METRICS[m].needs not in ("weights", "none") for m in metrics)
    batches = limit_examples(batches, max_examples) if uses_data else []
    raws: dict[str, torch.Tensor] = {}
    keys: dict[str, str] = {}
    if cache:
        model_fp = model_fingerprint(model)
        data_fp = batches_fingerprint(batches) if uses_data else ""
        for metric in metrics:
            needs_data = METRICS[metric].needs not in ("weights", "none")
            options = {"keep": keep_t.int().flatten().tolist() if needs_data else None,
                       "seed": seed if metric == "random" else None}
            keys[metric] = cache_key(model_fp, data_fp if needs_data else "", metric, options)
            hit = load_cached(keys[metric])
            if hit is not None:
                raws[metric] = hit
    missing = [m for m in metrics if m not in raws]
    groups: list[list[str]] = []
    for group in (GRADIENT_METRICS, tuple(ATTENTION_METRICS)):
        if any(m in group for m in missing):
            groups.append([m for m in missing if m in group])
    groups += [[m] for m in missing if m not in GRADIENT_METRICS and m not in ATTENTION_METRICS]
    for number, group in enumerate(groups):
        def sub(fraction, message, _start=number / len(groups)):
            _report(progress, _start, 1 / len(groups), fraction, message)
        first = group[0]
        if first in GRADIENT_METRICS:  # under torchrun: each process scores a shard, the sums are all-reduced
            parts = gate_gradient_contributions(model, distributed.shard(batches), keep_t, sub)
            computed = {m: distributed.aggregate_all(parts[m]) for m in group}
        elif first in ATTENTION_METRICS:
            parts = attention_contributions(model, batches, keep_t, sub)
            computed = {m: parts[m].aggregate() for m in group}
        elif first == "ablation":
            computed = {first: ablation_statistic(model, batches, keep_t, sub)}
        elif first == "norm":
            computed = {first: norm_contributions(model, batches, keep_t, sub).aggregate()}
        elif first == "magnitude":
            computed = {first: magnitude_statistic(model)}
        else:
            computed = {first: random_statistic(model, seed)}
        for metric, value in computed.items():
            raws[metric] = value.double()
            if cache:
                store_cached(keys[metric], raws[metric])
    _report(progress, 0, 1, 1.0, "scores ready")
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
