"""evaluation: how good and how costly a mask is — metrics as pure functions, the evaluation loop, zero-shot
classification, the layer-prefix cache, the live what-if evaluator, analytic FLOPs/parameters and measured
latency.

May import: headprune.core, headprune.model, headprune.sources. Never a later stage.
"""
