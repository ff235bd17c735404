"""The engine on a GPU (marker `cuda`; skipped without one): masking, pruning, live evaluation, gate-gradient
scores, least-squares recovery and latency measurement give on CUDA what they give on the CPU, and concurrent
sessions over one CUDA model still get their own numbers."""
from __future__ import annotations

import threading

import pytest
import torch

from headprune.evaluation.latency import measure
from headprune.evaluation.live import LiveEvaluator
from headprune.evaluation.loop import evaluate
from headprune.model import intervene, layout
from headprune.model.forward import forward_logits, to_device
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.model.units import to_units
from headprune.recovery.lsq import lsq_recover
from headprune.scoring.api import score_heads

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _setup(family: str):
    cpu = tiny_model(family, seed=2)
    gpu = intervene.private_copy(cpu).to("cuda")
    batches = [tiny_batch(cpu, batch_size=4, seq_len=10, seed=s) for s in range(2)]
    keep = torch.rand(layout.head_grid(cpu), generator=torch.Generator().manual_seed(5)) > 0.4
    return cpu, gpu, batches, keep


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_masking_pruning_and_live_evaluation_match_the_cpu(family):
    cpu, gpu, batches, keep = _setup(family)
    with torch.no_grad(), intervene.masked(cpu, keep):
        expected = forward_logits(cpu, batches[0])
    with torch.no_grad(), intervene.masked(gpu, keep):
        masked_gpu = forward_logits(gpu, to_device(batches[0], torch.device("cuda")))
    pruned = prune(gpu, keep)
    with torch.no_grad():
        pruned_gpu = forward_logits(pruned, to_device(batches[0], torch.device("cuda")))
    torch.testing.assert_close(masked_gpu.cpu(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pruned_gpu.cpu(), expected, atol=1e-4, rtol=1e-4)
    live = LiveEvaluator(gpu, batches)
    for mask in (keep, ~keep | torch.eye(*keep.shape, dtype=torch.bool), keep):
        assert live.evaluate(mask)["loss"] == pytest.approx(evaluate(cpu, batches, mask)["loss"], rel=1e-4)
    assert not intervene.attached(gpu)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_gradient_scores_and_least_squares_match_the_cpu(family):
    cpu, gpu, batches, keep = _setup(family)
    expected = score_heads(cpu, batches, "gradient", cache=False)
    got = score_heads(gpu, batches, "gradient", cache=False)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3, equal_nan=True)
    recovery = lsq_recover(gpu, keep, batches)
    with recovery.applied(gpu):
        applied = evaluate(gpu, batches)["loss"]
    assert evaluate(prune(recovery.bake(gpu), keep), batches)["loss"] == pytest.approx(applied, rel=1e-4)
    reference = lsq_recover(cpu, keep, batches)
    with reference.applied(cpu):
        assert evaluate(cpu, batches)["loss"] == pytest.approx(applied, rel=1e-3)


def test_latency_on_the_gpu_is_measured_with_synchronisation():
    cpu, gpu, _, keep = _setup("llama")
    keep = to_units(keep, cpu, "kv-group")  # whole KV groups: no KV copies, so the model surely shrinks
    result = measure(gpu, keep, batch_size=4, seq_len=32, repeats=5, warmup=2)
    assert result["device"].startswith("cuda") and 0 < result["flop_ratio"] < 1
    assert result["pruned"]["params"] < result["dense"]["params"]


def test_concurrent_sessions_on_one_gpu_model():
    cpu, gpu, batches, keep = _setup("bert")
    masks = [keep, ~keep | torch.eye(*keep.shape, dtype=torch.bool), torch.ones_like(keep)]
    want = [evaluate(gpu, batches, m)["loss"] for m in masks]
    got, errors = [], []

    def session(order):
        try:
            for _ in range(3):
                for i in order:
                    got.append((i, evaluate(gpu, batches, masks[i])["loss"]))
                score_heads(gpu, batches, "entropy", cache=False)  # attention weights, on a twin
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=session, args=(order,)) for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(got) == 27
    assert all(loss == pytest.approx(want[i], rel=1e-5) for i, loss in got)
    assert gpu.config._attn_implementation == cpu.config._attn_implementation and not intervene.attached(gpu)
