"""Scoring heads and reading the scores: one metric, several compared, bootstrap rank intervals, roles,
one head's attention pattern. Results are shared by every session of the workload (its store).

A part of `Workbench` (headprune/workbench/bench.py): it uses the state set up there (`workload`, `model`,
`shape`, the live evaluator and memo, `recovered`, `compressed`).
"""
from __future__ import annotations

from typing import Any

from ..core.progress import Progress
from ..model.schema import ScoreRecord
from ..scoring.agreement import bootstrap_ranks, compare_metrics
from ..scoring.api import score_heads, score_many
from ..scoring.attention import attention_pattern
from ..scoring.registry import METRICS
from ..scoring.roles import head_roles
from ..sources.batches import make_batches
from ..sources.tokens import display_tokens
from .records import mask_key

GRADIENT_PASSES = 2.2  # a gradient-metric scoring pass in dense forward passes (bench/score_speed.py: 2.11)


class WorkbenchScores:
    """Scoring heads and reading the scores (a part of `Workbench`)."""

    def score(self, metric: str, *, keep=None, normalise_layers: bool = False, global_minmax: bool = False,
              seed: int = 0, cache: bool = True, progress: Progress | None = None) -> ScoreRecord:
        """`metric`'s scores of every head on the workload's examples, with what they mean; shared by every
        session (the disk cache holds the raw statistic across runs)."""
        options = {"normalise_layers": normalise_layers, "global_minmax": global_minmax, "seed": seed}
        key = (metric, tuple(sorted(options.items())), None if keep is None else mask_key(keep))
        found = self.workload.store.get("scores", key)
        if found is not None:
            return found
        scores = score_heads(self.model, self.workload.batches, metric, keep=keep, normalise_layers=normalise_layers,
                             global_minmax=global_minmax, seed=seed, cache=cache, progress=progress)
        return self.workload.store.put("scores", key, ScoreRecord(metric, scores, options, self.workload.loaded.model_id,
                                                                  self._data_record()))

    def score_seconds(self, metric: str) -> float | None:
        """Expected seconds to score `metric` on the workload's examples, from the measured dense pass: gradient
        metrics cost about 2.1 passes (forward + backward; bench/score_speed.py), others are not estimated (None)."""
        if METRICS[metric].needs != "gradient":
            return None
        return GRADIENT_PASSES * float(self.dense.seconds or 0.0)

    def stored_score(self, metric: str, **options) -> ScoreRecord | None:
        """The score record of `metric` if some session computed it already (no work)."""
        options = {"normalise_layers": False, "global_minmax": False, "seed": 0, **options}
        return self.workload.store.get("scores", (metric, tuple(sorted(options.items())), None))

    def adopt_scores(self, record: ScoreRecord) -> ScoreRecord:
        """Make a score record read from a file (`headprune score --out`) available like computed scores."""
        options = {"normalise_layers": False, "global_minmax": False, "seed": 0, **record.options}
        options = {k: options[k] for k in ("normalise_layers", "global_minmax", "seed")}
        return self.workload.store.put("scores", (record.metric, tuple(sorted(options.items())), None), record)

    def compare(self, metrics: list[str], *, only_stored: bool = False, progress: Progress | None = None) -> dict | None:
        """Score maps of `metrics` (and `attention_mean`, the teaching example) and their rank correlations
        (`only_stored`: None unless some session computed them)."""
        found = self.workload.store.get("compare", tuple(metrics))
        if found is not None or only_stored:
            return found
        wanted = list(dict.fromkeys([*metrics, "attention_mean"]))
        maps = score_many(self.model, self.workload.batches, wanted, progress=progress)
        return self.workload.store.put("compare", tuple(metrics),
                                       {"maps": maps, "corr": compare_metrics({m: maps[m] for m in metrics})})

    def bootstrap(self, metric: str, *, only_stored: bool = False, progress: Progress | None = None) -> dict | None:
        """Bootstrap rank intervals of `metric` (20 resamples of the examples; `only_stored` as in `compare`)."""
        found = self.workload.store.get("bootstrap", (metric,))
        if found is None and not only_stored:
            found = self.workload.store.put("bootstrap", (metric,),
                                            bootstrap_ranks(self.model, self.workload.batches, metric, progress=progress))
        return found

    def roles(self, *, max_examples: int = 64, only_stored: bool = False):
        """Role tags of every head (a DataFrame: layer, head, role, statistic, value; `only_stored` as in
        `compare`)."""
        found = self.workload.store.get("roles", (max_examples,))
        if found is None and not only_stored:
            found = self.workload.store.put("roles", (max_examples,),
                                            head_roles(self.model, self.workload.batches, max_examples=max_examples))
        return found

    def attention_pattern(self, example_index: int, layer: int, head: int) -> tuple[Any, list[str]]:
        """One head's attention map on one of the workload's examples: (weights (T, T), token texts)."""
        w = self.workload
        one = make_batches(w.loaded.tokenizer, w.df.iloc[[example_index]].reset_index(drop=True), w.loaded.task,
                           batch_size=1, max_length=int(w.settings.get("max_length", 128)))[0]
        weights, ids = attention_pattern(self.model, one, 0, layer, head)
        return weights, display_tokens(w.loaded.tokenizer, ids)
