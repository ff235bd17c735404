"""search: masks from scores — the N least important heads, iterative removal orders, pruning curves, the
budget search, target masks, and compress to a target (prune, refit and distil step by step within a quality
and a time budget).

May import: headprune.core, model, sources, evaluation, scoring, recovery. Never the workbench or front ends.
"""
