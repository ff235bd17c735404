"""Brute-force references for what a mask did to each example."""
from __future__ import annotations

import torch

from headprune.model.intervene import masked


def alone(bench, row, keep):
    """Brute force: logits of data-frame row `row` run on its own (no padding, batch of one) under `keep`."""
    w = bench.workload
    enc = w.loaded.tokenizer(str(w.df["text"].iloc[row]), truncation=True, max_length=w.settings["max_length"],
                             return_tensors="pt")
    with masked(w.model, keep), torch.inference_mode():
        kwargs = {"use_cache": False} if w.loaded.task == "causal-lm" else {}
        return w.model(**enc, **kwargs).logits[0], enc["input_ids"][0]
