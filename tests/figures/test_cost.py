"""figures.cost: cost bars relative to the dense model."""
import plotly.graph_objects as go
import pytest

from headprune import figures


# ------------------------------------------------------------------------------------------------ cost
def test_cost_bars_normalise_to_dense():
    dense = dict(params=22_700_000, flops_per_token=45e6, latency_ms=4.0)
    pruned = dict(params=17_025_000, flops_per_token=30e6, latency_ms=3.0)
    fig = figures.cost_bars_figure(dense, pruned)
    bars_dense, bars_pruned = fig.data
    assert isinstance(bars_pruned, go.Bar) and fig.layout.barmode == "group"
    assert list(bars_dense.y) == [100.0] * 3
    assert list(bars_pruned.y) == pytest.approx([75.0, 100 * 30 / 45, 75.0])
    assert bars_dense.text[0] == "22.7 M" and bars_pruned.text[2] == "3 ms (75%)"
    assert figures.cost_bars_figure(dense, pruned, keys=("params",)).data[0].x == ("parameters",)
    with pytest.raises(ValueError, match="cost key 'kv_cache_bytes' must be in both dicts"):
        figures.cost_bars_figure(dense, pruned, keys=("kv_cache_bytes",))
    with pytest.raises(ValueError, match=r"dense\['params'\] must be > 0"):
        figures.cost_bars_figure(dict(dense, params=0), pruned)
