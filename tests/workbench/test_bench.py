"""The Workbench (headprune.workbench.bench): the live set sized from the measured dense pass, and progress
of a curves run that only moves forward."""
from __future__ import annotations

import pytest
import torch

from headprune.workbench import Workbench, open_workload

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread of a shared machine


def test_live_set_is_sized_from_the_measured_dense_pass(classifier_bench):
    bench = Workbench(classifier_bench.workload)
    w = bench.workload
    n = len(w.df)
    assert bench.live_size(target_s=1e9) == n and bench.live_size(target_s=0.0) == 32
    per_example = 0.5 * bench.dense.seconds / n  # a toggle re-runs about half a dense pass
    assert bench.live_size(target_s=per_example * 40.5) == 40
    seconds, measured = bench.toggle_seconds()
    assert seconds == pytest.approx(0.5 * bench.dense.seconds) and not measured
    keep = torch.ones(w.shape, dtype=torch.bool)
    keep[1, 0] = False
    bench.exact(keep)
    seconds, measured = bench.toggle_seconds()
    assert measured and seconds == bench.exact(keep).seconds
    smaller = w.with_limit(40)  # the same sample as opening the workload with --limit 40
    again = open_workload(w.loaded.model_id, w.data_spec, limit=40, batch_size=w.settings["batch_size"])
    assert smaller.df.equals(again.df) and smaller.key == again.key and len(smaller.batches) == len(again.batches)


def test_curves_progress_only_moves_forward_and_ends_at_one(tmp_path):
    from helpers.tiny import tiny_workspace

    from headprune.workbench import Workbench, open_workload

    model_dir, data = tiny_workspace(tmp_path, rows=32)
    bench = Workbench(open_workload(str(model_dir), str(data)))
    seen = []
    bench.curves(["gradient", "magnitude"], ["one-shot", "iterative"], [0.0, 0.25, 0.5], step=0.25, seeds=2,
                 progress=lambda f, m="": seen.append(f))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
