"""Small synthetic inputs of the figure builders: head scores, pruning curves and a compress trajectory."""
import numpy as np
import pandas as pd


def random_scores(layers=4, heads=6, seed=0):
    return np.random.default_rng(seed).random((layers, heads))


def grid_points(fig):
    """(layer, head) of every grid point, over all traces, with the trace name of each."""
    return [(tuple(cd), trace.name) for trace in fig.data for cd in trace.customdata]


def plot_px(fig):
    """Plot-area (height, width) in pixels from the layout."""
    m = fig.layout.margin
    return fig.layout.height - m.t - m.b, fig.layout.width - m.l - m.r



def curves():
    rows = [dict(metric=m, mode=mode, fraction=f, accuracy=1 - f * k, loss=f * k)
            for m, k in (("gradient", 0.5), ("random", 0.9)) for mode in ("one-shot", "iterative")
            for f in (0.0, 0.25, 0.5)]
    return pd.DataFrame(rows)



def trajectory():
    rows = [(1, "least-squares", 6, 0.80, True), (2, "least-squares", 9, 0.70, False), (3, "least-squares", 7, 0.79, True),
            (4, "distil", 10, 0.80, True), (5, "distil", 11, 0.74, False), (6, "polish", 10, 0.81, True)]
    return pd.DataFrame([dict(step=s, phase=p, heads_removed=r, val=v, accepted=a, elapsed=10.0 * s, distill_steps=0)
                         for s, p, r, v, a in rows])
