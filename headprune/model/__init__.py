"""model: what headprune does to a model — family adapters (every family fact), the head layout, keep masks
and their files, GQA units, physical pruning, save/load, and the intervention layer (every hook, replay,
capture and weight swap, context-scoped and thread-safe).

May import: headprune.core. Never a later stage (sources, evaluation, scoring, ...).
"""
