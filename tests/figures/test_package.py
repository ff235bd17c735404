"""The figures package: every builder it exports returns a Figure that serialises to JSON."""
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from helpers.figdata import curves, random_scores, trajectory

from headprune import figures


# ---------------------------------------------------------------------------------------- serialisable
@pytest.mark.parametrize("build", [
    lambda: figures.head_grid_figure(np.where(random_scores() > 0.9, np.nan, random_scores()), random_scores(seed=4) > 0.5,
                                     kv_group_size=2, title="gradient"),
    lambda: figures.small_multiples_figure({"a": random_scores(), "b": random_scores(seed=1)}),
    lambda: figures.correlation_figure(pd.DataFrame(random_scores(6, 3)).corr()),
    lambda: figures.curves_figure(curves(), current=(0.5, 0.7), dense_accuracy=1.0),
    lambda: figures.attention_figure(np.eye(70), ["the"] * 70),
    lambda: figures.attention_mean_explainer_figure(np.full((4, 6), 0.1), random_scores(), "fisher"),
    lambda: figures.cost_bars_figure(dict(params=10), dict(params=5), keys=("params",)),
    lambda: figures.compress_figure(trajectory(), heads_total=12, dense=0.8, threshold=0.75, test=0.78),
    lambda: figures.ab_grid_figure(random_scores() > 0.5, random_scores(seed=2) > 0.5, kv_group_size=3),
])
def test_every_figure_serialises(build):
    fig = build()
    assert isinstance(fig, go.Figure)
    assert json.loads(fig.to_json())["data"]
