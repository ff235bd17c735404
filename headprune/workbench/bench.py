"""The Workbench: every operation the CLI and the dashboard share, over one workload.

After explainerdashboard's "stateful explainer": the workload (model, data, results computed on it) may be shared
by many browser sessions; a `Workbench` is one session's view of it, holding what that session owns (its live
evaluator, its recovered mask). Each CLI command is an argument parser plus Workbench calls; each dashboard page
lays out widgets and figures and calls the Workbench. No pipeline is assembled anywhere else.
"""
from __future__ import annotations

import collections
import threading

from ..core.errors import UserError
from ..evaluation.live import LiveEvaluator
from ..evaluation.metrics import Evaluation
from ..search.compress import CompressResult
from ..sources.batches import make_batches
from .ops_deploy import WorkbenchDeploy
from .ops_live import WorkbenchLive
from .ops_masks import WorkbenchMasks
from .ops_outputs import WorkbenchOutputs
from .ops_scores import WorkbenchScores
from .records import RecoveredMask
from .workload import Workload, split_batches


class Workbench(WorkbenchScores, WorkbenchMasks, WorkbenchLive, WorkbenchDeploy, WorkbenchOutputs):
    """One session's operations over a (possibly shared) `Workload`; grouped by concern into the parts it
    inherits (ops_scores, ops_masks, ops_live, ops_deploy, ops_outputs), all over the state set up here."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self._live: LiveEvaluator | None = None
        self._exact: collections.OrderedDict = collections.OrderedDict()  # mask key -> (Evaluation, ExampleOutputs)
        self._measured: dict[tuple, dict] = {}  # mask key -> the latest `measure` of it
        self._toggles: collections.deque = collections.deque(maxlen=20)  # seconds of recent live re-evaluations
        self._live_lock = threading.Lock()  # the live evaluator moves its reference mask: one caller at a time
        self.recovered: RecoveredMask | None = None
        self.compressed: CompressResult | None = None  # this session's last compress run

    # ------------------------------------------------------------------------------------------ basics
    @property
    def model(self):
        return self.workload.model

    @property
    def shape(self) -> tuple[int, int]:
        return self.workload.shape

    @property
    def dense(self) -> Evaluation:
        return self.workload.dense

    def split_batches(self, split: str | None, *, limit: int | None = None, batch_size: int | None = None):
        """(data frame, batches) of another split of the workload's data, batched like the workload."""
        w = self.workload
        return split_batches(w.loaded, w.data_spec, split, limit=limit, batch_size=batch_size or w.settings["batch_size"],
                             max_length=w.settings["max_length"], seed=w.settings["seed"], data_options=w.data_options())

    def other_examples(self, split: str | None, limit: int | None, *, purpose: str) -> tuple[list, str]:
        """(batches, description) of up to `limit` (None: all) examples of `split` that are not among the
        workload's own examples (so a search judged or calibrated on them does not see the live set). A source
        without such a split gives its remaining rows; with nothing left, the workload's own examples, said so."""
        w = self.workload
        key = (split, limit, purpose)
        found = w.store.get("other-examples", key)
        if found is not None:
            return found
        try:
            df, _ = self.split_batches(split)
        except UserError:
            df, split = self.split_batches(None)[0], None
        own = set(w.df["text"].astype(str))
        rest = df[~df["text"].astype(str).isin(own)]
        if len(rest) == 0:
            return w.store.put("other-examples", key, (w.batches, f"the live examples themselves (the data has no "
                                                                  f"others; optimistic {purpose})"))
        rest = rest.sample(n=min(limit or len(rest), len(rest)), random_state=w.settings["seed"]).reset_index(drop=True)
        batches = make_batches(w.loaded.tokenizer, rest, w.loaded.task, batch_size=w.settings["batch_size"],
                               max_length=w.settings["max_length"], seed=w.settings["seed"])
        where = f"{split} examples" if split else "other examples of the same file"
        return w.store.put("other-examples", key, (batches, f"{len(rest)} {where}, apart from the live set"))

    def _data_record(self) -> dict:
        w = self.workload
        return {"data": w.data_spec, "split": w.split, "limit": w.settings.get("limit"), "n": len(w.df),
                "max_length": w.settings.get("max_length")}
