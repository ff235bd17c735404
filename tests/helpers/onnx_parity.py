"""Shared check of the per-family ONNX export tests: export a tiny model pruned by a mask, then compare ONNX
Runtime with the masked dense model (an independent reference) at several batch and sequence sizes."""
from __future__ import annotations

import torch

import headprune
from headprune.deploy import export_onnx, loads_in, read_sidecar, session
from headprune.deploy.runtime import feed
from headprune.model import layout
from headprune.model.forward import real_tokens
from headprune.model.tiny import tiny_batch, tiny_model

from .masks import keep_rows

SHAPES = [(1, 1), (3, 5), (2, 20)]  # (batch, sequence): neither is the export's example (2, 8)
LAYERS = {"distilbert": "n_layers", "gpt2": "n_layer"}  # the config key for the number of layers, where unusual


def masked_logits(model, inputs, keep, recovery=None):
    extra = {"use_cache": False} if layout.task_of(model) == "causal-lm" else {}
    with torch.no_grad(), (headprune.masked(model, keep) if recovery is None else recovery.applied(model)):
        return model(**inputs, **extra).logits


def check_export(tmp_path, family, task, rows, recovery=None):
    """Export a 2-layer tiny `family`/`task` model keeping `rows` (heads per layer; exports take seconds per layer)
    and, if given, recovered by `recovery(model, keep)`; ONNX Runtime must equal the masked (recovered) model."""
    model = tiny_model(family, task, **{LAYERS.get(family, "num_hidden_layers"): 2})
    keep = keep_rows(model, rows)
    if recovery is not None:
        recovery = recovery(model, keep)
    assert loads_in(model, keep)["onnxruntime"].ok
    result = export_onnx(model, tmp_path / f"{family}.onnx", keep, recovery=recovery,
                         batches=[tiny_batch(model, seed=s) for s in range(2)])
    assert result.parity.ok and result.parity.agreement == 1.0, result.parity
    record = read_sidecar(result.path)
    assert record["kept_heads"] == [sorted(r) for r in rows] and record["task"] == layout.task_of(model)
    sess = session(result.path)
    for batch_size, seq_len in SHAPES:
        inputs = feed(tiny_batch(model, batch_size=batch_size, seq_len=seq_len, seed=9), record["inputs"])
        got = torch.from_numpy(sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0])
        expected = masked_logits(model, inputs, keep, recovery)
        if layout.task_of(model) != "classification":
            real = real_tokens(inputs)
            got, expected = got[real], expected[real]
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    return result
