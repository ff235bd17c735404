"""recovery: winning back what pruning cost — retraining-free least squares (`lsq`), the seeded training loop,
distillation, LoRA, checkpoints and the recovery fine-tune (data-parallel through Accelerate).

May import: headprune.core, headprune.model, headprune.sources, headprune.evaluation. Never scoring, search or
later stages.
"""
