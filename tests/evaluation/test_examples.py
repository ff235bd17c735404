"""What a mask did to each example (headprune.evaluation.examples): comparisons need one text per example;
the heads responsible for an example's change equal restoring each head alone."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.examples import alone as _alone

from headprune.evaluation.examples import compare_examples, responsible_heads

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread of a shared machine


def test_compare_examples_refuses_different_example_sets(classifier_bench):
    a = classifier_bench.examples()
    with pytest.raises(ValueError, match="one text per example"):
        compare_examples(a, a, ["only one"])


def test_responsible_heads_equal_restoring_each_head_alone(classifier_bench):
    bench = classifier_bench
    w = bench.workload
    keep = torch.ones(w.shape, dtype=torch.bool)
    keep[0, :3] = keep[1, 1:] = False
    from headprune.workbench.changes import one_example

    row = 5
    effects = responsible_heads(w.model, one_example(w, row), keep, chunk=2)
    assert len(effects) == int((~keep).sum())
    gold = torch.tensor([int(w.df["label"].iloc[row])])
    masked_loss = float(F.cross_entropy(_alone(bench, row, keep)[0][None], gold))
    for effect in effects:
        restored = keep.clone()
        restored[effect.layer, effect.head] = True
        logits = _alone(bench, row, restored)[0]
        assert effect.loss_restored == pytest.approx(float(F.cross_entropy(logits[None], gold)), abs=1e-4)
        assert effect.loss_masked == pytest.approx(masked_loss, abs=1e-4) and effect.prediction == int(logits.argmax())
    assert [e.gain for e in effects] == sorted((e.gain for e in effects), reverse=True)
    assert len(bench.responsible(row, keep, top=2)) == 2
    with pytest.raises(ValueError, match="removed head"):
        responsible_heads(w.model, one_example(w, row), keep, [(0, 3)])
