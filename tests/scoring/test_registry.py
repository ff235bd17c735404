"""scoring.registry: the metric specs, per-example contributions and their reduction, scored heads, finish_scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headprune.core.errors import UserError
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_model
from headprune.scoring.registry import (
    ATTENTION_METRICS,
    GRADIENT_METRICS,
    METRICS,
    Contributions,
    check_metric,
    finish_scores,
    scored_heads,
)


def test_every_metric_is_described_and_unknown_ones_are_refused():
    needs = {"gradient", "attention", "forward", "weights", "none"}
    for name, spec in METRICS.items():
        assert spec.name == name and spec.description and spec.citation and spec.raw_label
        assert spec.needs in needs and spec.sign in (1.0, -1.0)
        check_metric(name)
    assert all(METRICS[m].needs == "gradient" for m in GRADIENT_METRICS)
    assert all(METRICS[m].needs == "attention" for m in ATTENTION_METRICS)
    assert [m for m, s in METRICS.items() if s.sign < 0] == ["entropy"]  # low entropy = focused = important
    assert [m for m, s in METRICS.items() if s.teaching] == ["attention_mean"]
    with pytest.raises(UserError) as caught:
        check_metric("Gradient")
    assert caught.value.option == "metric" and "unknown metric 'Gradient'" in str(caught.value)
    assert ", ".join(METRICS) in str(caught.value)


def test_contributions_reduce_by_weighted_mean_or_sum_ignoring_nan():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 2, 3))
    values[1, 0, 2] = values[3, 1, 1] = math.nan
    weights = np.array([1.0, 2.0, 3.0, 1.0, 4.0])
    parts = Contributions(torch.tensor(values), torch.tensor(weights))
    total = np.nansum(values, axis=0)
    np.testing.assert_allclose(parts.aggregate().numpy(), total / weights.sum())
    np.testing.assert_allclose(Contributions(parts.values, parts.weights, "sum").aggregate().numpy(), total)
    index = torch.tensor([4, 4, 0])  # a bootstrap resample, with repeats
    expected = np.nansum(values[[4, 4, 0]], axis=0) / weights[[4, 4, 0]].sum()
    np.testing.assert_allclose(parts.aggregate(index).numpy(), expected)
    empty = Contributions(torch.zeros(0, 2, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.float64))
    assert torch.equal(empty.aggregate(), torch.zeros(2, 3, dtype=torch.float64))  # no division by zero


def test_scored_heads_are_kept_and_physically_present():
    model = tiny_model("bert")
    gone = torch.ones(3, 4, dtype=torch.bool)
    gone[0, 0] = gone[2, :] = False
    pruned = prune(model, gone)
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1, 1] = False
    assert torch.equal(scored_heads(model, keep), keep) and scored_heads(model).all()
    assert torch.equal(scored_heads(pruned), gone) and torch.equal(scored_heads(pruned, keep), gone & keep)
    with pytest.raises(UserError, match="expected"):
        scored_heads(model, torch.ones(2, 4, dtype=torch.bool))


def test_finish_scores_signs_blanks_and_normalises():
    raw = torch.tensor([[1.0, 2.0, 2.0], [3.0, 4.0, 0.5]], dtype=torch.float64)
    scored = torch.tensor([[True, True, False], [True, True, True]])
    plain = finish_scores(raw, "entropy", scored)
    assert plain.dtype == torch.float32 and plain.isnan().tolist() == [[False, False, True], [False] * 3]
    assert plain[~plain.isnan()].tolist() == [-1.0, -2.0, -3.0, -4.0, -0.5]
    layered = finish_scores(raw, "gradient", scored, normalise_layers=True).double()
    expected = np.array([[1 / 5 ** 0.5, 2 / 5 ** 0.5, np.nan], [3, 4, 0.5] / np.sqrt(9 + 16 + 0.25)])
    np.testing.assert_allclose(layered.numpy(), expected, rtol=1e-6)
    both = finish_scores(raw, "gradient", scored, normalise_layers=True, global_minmax=True).double().numpy()
    np.testing.assert_allclose(both, (expected - np.nanmin(expected)) / (np.nanmax(expected) - np.nanmin(expected)),
                               rtol=1e-6, atol=1e-7)
    constant = finish_scores(torch.full((2, 3), 7.0), "magnitude", scored, global_minmax=True)
    assert constant[scored].eq(0).all() and constant[~scored].isnan().all()
    assert finish_scores(raw, "norm", torch.zeros(2, 3, dtype=torch.bool), global_minmax=True).isnan().all()
