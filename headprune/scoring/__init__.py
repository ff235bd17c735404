"""scoring: how important each head is — one module per technique (gate gradients, attention weights, output
norms, ablation, weights/random) behind one registry, rank agreement and bootstrap intervals, head roles, and
the on-disk score cache.

May import: headprune.core, headprune.model, headprune.sources, headprune.evaluation. Never a later stage.
"""
