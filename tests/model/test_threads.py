"""Many sessions over one shared model: every concurrent result equals the single-threaded reference.

Each thread runs a seeded mix of what dashboard sessions do at once — masked evaluation, live toggles through
its own live evaluator, gradient scores, every attention-weight metric, head roles, attention patterns and a
least-squares recovery applied — on one shared tiny BERT or Llama with padded batches. Before the fix, a
session scoring attention weights switched the shared model to eager attention and others' numbers changed.
"""
from __future__ import annotations

import random
import threading

import pytest
import torch

from headprune.evaluation.live import LiveEvaluator
from headprune.evaluation.loop import evaluate
from headprune.model import intervene, layout
from headprune.model.intervene import masked
from headprune.model.tiny import tiny_batch, tiny_model
from headprune.recovery.lsq import lsq_recover
from headprune.scoring.api import score_heads, score_many
from headprune.scoring.attention import attention_pattern
from headprune.scoring.roles import head_roles

THREADS, ROUNDS = 4, 3
OPERATIONS = ("evaluate", "toggles", "gradient", "attention_metrics", "roles", "pattern", "recovered")


def _masks(model, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grid = layout.head_grid(model)
    return [torch.rand(grid, generator=gen) > 0.3 for _ in range(count)]


class Workload:
    """One shared model, its batches, a few masks and a recovery, and every operation's reference result."""

    def __init__(self, family: str):
        self.model = tiny_model(family, seed=1)
        self.batches = [tiny_batch(self.model, batch_size=4, seq_len=10, seed=s) for s in range(2)]
        self.masks = _masks(self.model, 4, seed=7)
        self.recovery = lsq_recover(self.model, self.masks[0], self.batches)
        self.reference = {name: self.run(name) for name in OPERATIONS}

    def run(self, name: str):
        model, batches, masks = self.model, self.batches, self.masks
        if name == "evaluate":
            return [evaluate(model, batches, keep)["loss"] for keep in masks]
        if name == "toggles":
            live = LiveEvaluator(model, batches)
            return [live.evaluate(keep)["loss"] for keep in masks + masks[::-1]]
        if name == "gradient":
            return score_heads(model, batches, "gradient", keep=masks[1], cache=False)
        if name == "attention_metrics":
            found = score_many(model, batches, ["entropy", "confidence", "attention_mean"], keep=masks[2], cache=False)
            return torch.stack(list(found.values()))
        if name == "roles":
            return head_roles(model, batches).sort_values(["layer", "head", "role", "statistic"]).to_numpy().tolist()
        if name == "pattern":
            with masked(model, masks[3]):
                return torch.from_numpy(attention_pattern(model, batches[0], 1, 1, 0)[0])
        with self.recovery.applied(model):
            return evaluate(model, batches)["loss"]


def _same(got, want) -> bool:
    if isinstance(want, torch.Tensor):
        return torch.allclose(got, want, atol=1e-6, rtol=1e-6, equal_nan=True)
    if isinstance(want, list) and want and isinstance(want[0], float):
        return all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(got, want))
    if isinstance(want, float):
        return abs(got - want) <= 1e-6 * max(1.0, abs(want))
    return got == want


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_concurrent_sessions_get_the_single_threaded_results(family, one_thread):
    work = Workload(family)
    start = threading.Barrier(THREADS)
    done, failures = [], []

    def session(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(ROUNDS):
            for name in rng.sample(OPERATIONS, len(OPERATIONS)):
                try:
                    got = work.run(name)
                except Exception as exc:  # noqa: BLE001 - reported below with the operation's name
                    failures.append((name, repr(exc)))
                    continue
                (done if _same(got, work.reference[name]) else failures).append((name, seed))

    threads = [threading.Thread(target=session, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures
    assert len(done) == THREADS * ROUNDS * len(OPERATIONS)
    assert work.model.config._attn_implementation == "sdpa"  # never switched
    assert not intervene.attached(work.model)  # nothing left behind


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_concurrent_first_use_attaches_one_set_of_hooks(family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 0] = False
    inside, counts = threading.Barrier(8), []

    def enter() -> None:
        with masked(model, keep):
            inside.wait()
            counts.append([sum(fn is intervene._proj_pre_hook for fn in proj._forward_pre_hooks.values())
                           for proj in layout.out_projections(model)])
            with torch.no_grad():
                model(**{k: v for k, v in batch.items() if k != "labels"})
            inside.wait()

    threads = [threading.Thread(target=enter) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert counts == [[1] * layout.num_layers(model)] * 8
    assert not intervene.attached(model)
    assert all(not proj._forward_pre_hooks and not proj._forward_hooks for proj in layout.out_projections(model))
