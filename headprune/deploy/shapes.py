"""Runtime-safe shapes: which runtimes load a mask's pruned model, and the nearest mask that loads everywhere.

Shape after `prune(model, keep)`, per layer: the kept query heads and the stored KV slots (GQA: the gcd rule of
`headprune.model.surgery`, so a layer whose kept groups keep different numbers of query heads stores KV copies).

Where it loads (`loads_in`), each verdict with its reason:
* headprune (`load_pruned`): any shape.
* ONNX Runtime (`headprune.deploy.export_onnx`): any shape, empty layers too — an ONNX graph carries each
  layer's own shapes. Exported without a KV cache (full-sequence forward passes).
* plain transformers (`AutoModelFor*.from_pretrained`): the config has one head count for all layers, so every
  layer must keep the same query and KV head counts (at least one head), the family's config must carry
  `head_dim` (Llama, Mistral, Qwen2; BERT-style and GPT-2 configs derive the head size from
  hidden_size / num_attention_heads) and the config class must accept the counts (its own validators, e.g.
  transformers 5's LlamaConfig wants hidden_size % num_attention_heads == 0).
* fixed-shape engines (vLLM, TGI): they read the model through its transformers config, so plain transformers
  must load it; GQA decoders must also keep whole KV groups, so that the query-per-KV ratio stays the one the
  engine's attention kernels already run for the original model and no KV head is stored twice.

`round_to_uniform` turns any mask into the nearest mask of that kind (same heads in every layer, whole KV
groups for GQA, a count the config accepts), by importance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import UserError
from ..evaluation.loop import evaluate
from ..model import adapters, layout
from ..model.layout import kept_mask
from ..model.surgery import config_rejects_counts
from ..model.units import uniform_head_counts

HEADPRUNE, TRANSFORMERS, ONNXRUNTIME, FIXED_SHAPE = "headprune", "transformers", "onnxruntime", "fixed-shape"
RUNTIME_LABELS = {
    HEADPRUNE: "headprune",
    TRANSFORMERS: "plain transformers",
    ONNXRUNTIME: "ONNX Runtime",
    FIXED_SHAPE: "fixed-shape engines (vLLM, TGI)",
}


def layer_shapes(model, keep=None) -> list[tuple[int, int]]:
    """Per layer, (query heads, stored KV heads) after `prune(model, keep)`; keep=None: the model as stored.

    Heads a pruned model no longer stores stay gone. Without GQA the KV count equals the query count.
    """
    keep = kept_mask(model) if keep is None else layout.to_keep_tensor(keep, model) & kept_mask(model)
    size = layout.kv_group_size(model)
    shapes = []
    for row in keep:
        counts = [int(c) for c in row.view(-1, size).sum(-1) if c > 0]  # kept query heads per kept group
        n_q = sum(counts)
        shapes.append((n_q, n_q // math.gcd(*counts) if counts else 0))
    return shapes


def _whole_groups(model, keep) -> bool:
    """Every KV group is kept whole or removed whole, in every layer."""
    size = layout.kv_group_size(model)
    per_group = keep.view(keep.shape[0], -1, size).sum(-1)  # (L, G)
    return bool(((per_group == 0) | (per_group == size)).all())


@dataclass(frozen=True)
class Verdict:
    """Whether one runtime loads the pruned model, and why (or why not)."""

    runtime: str  # one of RUNTIME_LABELS
    ok: bool
    reason: str

    @property
    def label(self) -> str:
        return RUNTIME_LABELS[self.runtime]

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "label": self.label, "ok": self.ok, "reason": self.reason}


@dataclass(frozen=True)
class LoadsIn:
    """Where the model pruned by a mask loads. shapes: per layer (query heads, KV heads) after pruning."""

    verdicts: tuple[Verdict, ...]
    shapes: tuple[tuple[int, int], ...]
    heads_kept: int

    def __getitem__(self, runtime: str) -> Verdict:
        return next(v for v in self.verdicts if v.runtime == runtime)

    @property
    def runtime_safe(self) -> bool:
        """True when every runtime loads it."""
        return all(v.ok for v in self.verdicts)

    def to_dict(self) -> dict:
        return {"verdicts": [v.to_dict() for v in self.verdicts], "shapes": [list(s) for s in self.shapes],
                "heads_kept": self.heads_kept, "runtime_safe": self.runtime_safe}


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}–{max(values)}"


def _plain_verdict(model, keep: torch.Tensor, shapes: list[tuple[int, int]]) -> Verdict:
    """The plain-transformers rule of the module docstring."""
    config, adapter = model.config, adapters.adapter_for(model)
    name = type(config).__name__
    if all(n_q == layout.num_heads(model) for n_q, _ in shapes):
        return Verdict(TRANSFORMERS, True, "no head removed: the original config describes it")
    if not adapter.explicit_head_dim:
        return Verdict(TRANSFORMERS, False,
                       f"{name} has no head_dim: {adapter.family} sizes heads as hidden_size / num_attention_heads, so "
                       "no config describes fewer heads of the same size (export_masked writes a copy that loads, with "
                       "removed heads zeroed: same size and speed)")
    empty = [layer for layer, (n_q, _) in enumerate(shapes) if n_q == 0]
    if empty:
        return Verdict(TRANSFORMERS, False, f"layer(s) {', '.join(map(str, empty))} keep no heads; a transformers "
                                            "config cannot say 0 heads")
    if len(set(shapes)) > 1:
        return Verdict(TRANSFORMERS, False,
                       f"layers keep different head counts ({_span([s[0] for s in shapes])} query, "
                       f"{_span([s[1] for s in shapes])} KV heads); a transformers config has one count for all layers")
    n_q, n_kv = shapes[0]
    rejected = config_rejects_counts(config, n_q, n_kv)
    if rejected:
        return Verdict(TRANSFORMERS, False, f"transformers refuses this config: {rejected}")
    size = layout.kv_group_size(model)
    groups_kept = keep.view(keep.shape[0], -1, size).any(-1).sum(-1)  # (L,)
    copies = "" if bool((groups_kept == n_kv).all()) else (
        "; kept groups keep different numbers of query heads, so KV heads are stored more than once")
    return Verdict(TRANSFORMERS, True, f"every layer keeps {n_q} query and {n_kv} KV heads: {name}(num_attention_heads="
                                       f"{n_q}, num_key_value_heads={n_kv}, head_dim={layout.head_dim(model)}){copies}")


def loads_in(model, keep=None) -> LoadsIn:
    """Where `prune(model, keep)` (keep=None: `model` as stored) loads, one `Verdict` per runtime (module doc).

    The plain-transformers verdict applies transformers' own config validation, and equals the
    `loads_with_from_pretrained` that `save_pruned` records.
    """
    keep = kept_mask(model) if keep is None else layout.to_keep_tensor(keep, model) & kept_mask(model)
    shapes = layer_shapes(model, keep)
    plain = _plain_verdict(model, keep, shapes)
    if not plain.ok:
        fixed = Verdict(FIXED_SHAPE, False, "these engines read the model through its transformers config, and "
                                            "plain transformers cannot load this shape (see why there)")
    elif layout.kv_group_size(model) > 1 and not _whole_groups(model, keep):
        fixed = Verdict(FIXED_SHAPE, False,
                        f"some kept KV groups keep only part of their {layout.kv_group_size(model)} query heads: the "
                        "query-per-KV ratio changes (or KV heads are stored twice), which engines' attention kernels "
                        "may not run and which does not shrink the KV cache; keep whole KV groups")
    else:
        n_q, n_kv = shapes[0]
        fixed = Verdict(FIXED_SHAPE, True, f"one shape in every layer ({n_q} query / {n_kv} KV heads"
                                           f"{', whole KV groups' if layout.kv_group_size(model) > 1 else ''}); "
                                           "tensor parallelism also needs the KV heads divisible by its size")
    verdicts = (
        Verdict(HEADPRUNE, True, "headprune.load_pruned reads any per-layer shape (headprune_pruned.json)"),
        plain,
        Verdict(ONNXRUNTIME, True, "the ONNX graph carries each layer's own shapes (any mask, empty layers too); "
                                   "exported without a KV cache"),
        fixed,
    )
    return LoadsIn(verdicts, tuple(shapes), int(keep.sum()))


@dataclass(frozen=True)
class UniformMask:
    """A runtime-safe mask and what changed. keep: (L, H) bool. added / removed: (layer, head) pairs relative to
    the input mask. score_kept(_before): summed importance of the kept heads. metrics_*: `headprune.evaluation.loop.evaluate`
    under the input mask and under `keep`, when batches were given."""

    keep: torch.Tensor
    heads_per_layer: int
    kv_heads_per_layer: int
    heads_kept_before: int
    added: tuple[tuple[int, int], ...]
    removed: tuple[tuple[int, int], ...]
    allowed_counts: tuple[int, ...]
    score_kept_before: float
    score_kept: float
    metrics_before: dict | None = None
    metrics_after: dict | None = None

    def to_dict(self) -> dict:
        return {"kept_heads": [row.nonzero().flatten().tolist() for row in self.keep],
                "heads_per_layer": self.heads_per_layer, "kv_heads_per_layer": self.kv_heads_per_layer,
                "heads_kept": int(self.keep.sum()), "heads_kept_before": self.heads_kept_before,
                "added": [list(p) for p in self.added], "removed": [list(p) for p in self.removed],
                "allowed_counts": list(self.allowed_counts), "score_kept_before": self.score_kept_before,
                "score_kept": self.score_kept, "metrics_before": self.metrics_before,
                "metrics_after": self.metrics_after}


def _scores_tensor(scores, model) -> torch.Tensor:
    grid = layout.head_grid(model)
    if scores is None:
        return torch.zeros(grid)
    try:
        scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"head scores must be numbers shaped {grid}: {exc}", option="scores") from None
    if tuple(scores.shape) != grid:
        raise UserError(f"head scores have shape {tuple(scores.shape)}, this model's heads are {grid} "
                        "(score this model, or pass scores made for it)", option="scores")
    return torch.nan_to_num(scores, nan=float("-inf"))


def _pairs(mask: torch.Tensor) -> tuple[tuple[int, int], ...]:
    return tuple((int(layer), int(head)) for layer, head in mask.nonzero().tolist())


def round_to_uniform(keep, scores, model, *, heads_per_layer: int | None = None, batches=None) -> UniformMask:
    """The nearest runtime-safe mask to `keep`: the same number of query heads in every layer, in whole KV groups
    for GQA families, a count the model's config accepts (`uniform_head_counts`).

    scores: (L, H) head importance, higher = more important (None: head order decides). The rule:
    * count: `heads_per_layer` if given (it must be allowed), else the allowed count nearest to the mask's mean
      kept heads per layer (keeps its head budget, hence its FLOPs, closest); a tie goes to the larger count.
    * per layer, units (heads; whole KV groups with GQA) are ranked by how many of their heads the mask keeps,
      then by summed score, then by lower index, and the first count/group-size units are kept. For a fixed
      count this is the mask closest to `keep` (fewest heads added or removed), ties settled by importance.
    With `batches` (labelled, from `make_batches`), both masks are evaluated: the accuracy cost of rounding.
    """
    keep = layout.to_keep_tensor(keep, model) & kept_mask(model)
    scores = _scores_tensor(scores, model)
    counts = uniform_head_counts(model)
    if not counts:
        raise UserError("some layer of this model keeps no whole head group, so no mask keeps the same heads in "
                        "every layer; start from the unpruned model")
    if heads_per_layer is not None and heads_per_layer not in counts:
        raise UserError(f"{heads_per_layer} heads per layer is not runtime-safe for this model; choose one of "
                        f"{', '.join(map(str, counts))}", option="heads_per_layer")
    layers, heads = keep.shape
    size = layout.kv_group_size(model)
    target = heads_per_layer if heads_per_layer is not None else float(keep.sum()) / layers
    count = min(counts, key=lambda n: (abs(n - target), -n))
    groups = heads // size
    kept_in_unit = keep.view(layers, groups, size).sum(-1)  # (L, G)
    unit_score = scores.view(layers, groups, size).sum(-1)  # (L, G)
    stored = kept_mask(model).view(layers, groups, size).all(-1)  # (L, G)
    out = torch.zeros(layers, groups, dtype=torch.bool)
    for layer in range(layers):
        ranked = sorted((g for g in range(groups) if stored[layer, g]),
                        key=lambda g: (-int(kept_in_unit[layer, g]), -float(unit_score[layer, g]), g))
        out[layer, ranked[: count // size]] = True
    rounded = out[:, :, None].expand(layers, groups, size).reshape(layers, heads).clone()
    metrics_before = metrics_after = None
    if batches is not None:
        metrics_before, metrics_after = evaluate(model, batches, keep), evaluate(model, batches, rounded)
    finite = torch.nan_to_num(scores, neginf=0.0)
    return UniformMask(rounded, count, count // size, int(keep.sum()), _pairs(rounded & ~keep), _pairs(keep & ~rounded),
                       tuple(counts), float(finite[keep].sum()), float(finite[rounded].sum()),
                       metrics_before, metrics_after)
