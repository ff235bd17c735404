"""Progress that is about linear in time: parts sized by their expected cost, never moving backwards."""
from __future__ import annotations

import pytest

from headprune.core.progress import weighted
from headprune.search.curves import curve_cost, ranking_cost

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread of a shared machine


def test_weighted_parts_follow_their_costs():
    seen = []
    first, second, empty, third = weighted(lambda f, m="": seen.append(round(f, 6)), [1, 3, 0, 4])
    first(1.0)
    second(0.5)
    empty(1.0)
    third(1.0)
    assert seen == [0.125, 0.3125, 0.5, 1.0]
    assert weighted(None, [1, 2]) == [None, None]


def test_curve_costs_weigh_ranking_against_evaluations():
    assert ranking_cost("magnitude", 72) == 0.0 and ranking_cost("gradient", 72) == pytest.approx(2.2)
    assert ranking_cost("gradient", 72, mode="iterative", step=0.1, until=0.5) == pytest.approx(11.0)
    assert ranking_cost("ablation", 72) == 36.0
    assert curve_cost("gradient", 72, [0.0, 0.5, 1.0]) == pytest.approx(5.2)


def test_curves_progress_only_moves_forward_and_ends_at_one(tmp_path):
    from test_app import tiny_workspace

    from headprune.workbench import Workbench, open_workload

    model_dir, data = tiny_workspace(tmp_path, rows=32)
    bench = Workbench(open_workload(str(model_dir), str(data)))
    seen = []
    bench.curves(["gradient", "magnitude"], ["one-shot", "iterative"], [0.0, 0.25, 0.5], step=0.25, seeds=2,
                 progress=lambda f, m="": seen.append(f))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
