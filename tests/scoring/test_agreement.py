"""Agreement between metrics (headprune.scoring.agreement): rank correlations and bootstrap rank intervals."""

import numpy as np
import pytest
import torch
from helpers.scores import setup as _setup

from headprune.scoring.agreement import bootstrap_ranks, compare_metrics
from headprune.scoring.api import score_many


def test_compare_metrics_and_bootstrap_ranks():
    model, batches = _setup("bert")
    maps = score_many(model, batches, ["gradient", "fisher", "random", "attention_mean"], cache=False)
    result = compare_metrics(maps)
    for table in (result["spearman"], result["kendall"]):
        assert list(table.index) == list(maps) and np.allclose(table.values, table.values.T, equal_nan=True)
        assert table.loc["gradient", "gradient"] == pytest.approx(1.0)
        assert np.isnan(table.loc["attention_mean", "gradient"])  # constant map: no ranking
    assert result["n_heads"] == 12
    boot = bootstrap_ranks(model, batches, "gradient", n_boot=10, seed=3)
    again = bootstrap_ranks(model, batches, "gradient", n_boot=10, seed=3)
    assert all(torch.equal(boot[k], again[k]) for k in boot)
    assert set(boot["rank"].flatten().tolist()) == set(range(1, 13))
    assert (boot["low"] <= boot["high"]).all() and boot["uncertain"].dtype == torch.bool
    fixed = bootstrap_ranks(model, batches, "magnitude", n_boot=5)
    assert torch.equal(fixed["low"], fixed["high"]) and not fixed["uncertain"].any()
