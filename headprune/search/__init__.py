"""search: masks from scores — the N least important heads, iterative removal orders, pruning curves, the
budget search and target masks.

May import: headprune.core, model, sources, evaluation, scoring, recovery. Never the workbench or front ends.
"""
