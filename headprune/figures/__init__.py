"""Pure figure builders: plain data (numpy arrays, lists, pandas frames) in, ``plotly.graph_objects.Figure`` out.

Nothing here computes scores or touches a model, and nothing imports Streamlit: the pages lay out what
these functions return, and the CLI can write the same figures to HTML. Every builder validates its input
and raises ``ValueError`` saying what shape or column it expected.

Conventions shared with the rest of headprune: per-head data has shape ``(num_layers, num_heads)``;
layer 0 is drawn at the top, like a table; a keep-mask is a bool array of that shape (``True`` = kept).
"""

from .attention import attention_figure, token_changes_html
from .cost import cost_bars_figure
from .curves import add_compress_trace, compress_figure, curves_figure
from .heads import (
    ab_grid_figure,
    attention_mean_explainer_figure,
    correlation_figure,
    head_grid_figure,
    small_multiples_figure,
)

__all__ = [
    "ab_grid_figure",
    "add_compress_trace",
    "attention_figure",
    "attention_mean_explainer_figure",
    "compress_figure",
    "correlation_figure",
    "cost_bars_figure",
    "curves_figure",
    "head_grid_figure",
    "small_multiples_figure",
    "token_changes_html",
]
