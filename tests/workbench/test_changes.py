"""What a mask did to each example, as the Workbench reports it (headprune.workbench.changes): flips, loss
and token movers equal a brute-force run of every example on its own; generation side by side; summary rows
with a recovered mask and a measured latency."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.examples import alone as _alone

from headprune.workbench import Workbench

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread of a shared machine


def _masks(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=gen) > 0.3
    b = torch.rand(shape, generator=gen) > 0.6
    return a, b


def test_flipped_examples_equal_a_brute_force_comparison(classifier_bench):
    bench = classifier_bench
    w = bench.workload
    a, b = _masks(w.shape)
    changes = bench.what_changed(a, b)
    expected = {"fixed": {}, "broken": {}, "changed": {}}
    logits = {(row, side): _alone(bench, row, keep)[0] for row in range(len(w.df)) for side, keep in (("a", a), ("b", b))}
    for row in range(len(w.df)):
        gold = int(w.df["label"].iloc[row])
        pa, pb = (logits[row, side].softmax(-1) for side in "ab")
        was, now = int(pa.argmax()), int(pb.argmax())
        if was != now:
            kind = "fixed" if now == gold else "broken" if was == gold else "changed"
            expected[kind][row] = (was, now, float(pa[gold]), float(pb[gold]))
    assert sum(map(len, expected.values())) > 0  # the masks do flip some examples
    names = w.loaded.label_names
    for kind in expected:
        found = {f.index: f for f in changes[kind]}
        assert set(found) == set(expected[kind]), kind
        for row, (was, now, prob_a, prob_b) in expected[kind].items():
            flip = found[row]
            assert flip.text == w.df["text"].iloc[row] and flip.label == names[int(w.df["label"].iloc[row])]
            assert (flip.before, flip.after) == (names[was], names[now])
            assert flip.gold_prob_before == pytest.approx(prob_a, abs=1e-5)
            assert flip.gold_prob_after == pytest.approx(prob_b, abs=1e-5)
    # the loss movers are the examples whose own loss moved most
    deltas = {}
    for row in range(len(w.df)):
        gold = torch.tensor([int(w.df["label"].iloc[row])])
        la, lb = (float(F.cross_entropy(logits[row, side][None], gold)) for side in "ab")
        deltas[row] = lb - la
    top = sorted(deltas, key=lambda r: -abs(deltas[r]))[:len(changes.loss_movers)]
    assert [m.index for m in changes.loss_movers] == top
    assert [m.delta for m in changes.loss_movers] == pytest.approx([deltas[r] for r in top], abs=1e-4)
    # against dense, and the live numbers are the ones `exact` reports
    assert bench.what_changed(None, None).fixed == () and bench.examples(a).n == len(w.df)
    assert float(bench.examples(a).loss.mean()) == pytest.approx(bench.exact(a)["loss"], rel=1e-5)


def test_language_model_loss_movers_and_token_changes_equal_brute_force(lm_bench):
    bench = lm_bench
    w = bench.workload
    a, b = _masks(w.shape, seed=1)
    changes = bench.what_changed(a, b, top=5)
    assert changes.fixed == changes.broken == ()
    per_token, losses = {}, {}
    for row in range(len(w.df)):
        (la, ids), (lb, _) = (_alone(bench, row, keep) for keep in (a, b))
        lpa, lpb = (lg[:-1].log_softmax(-1).gather(1, ids[1:, None])[:, 0] for lg in (la, lb))  # token t+1 | < t+1
        per_token[row] = (lpa, lpb)
        losses[row] = float(-lpb.mean()) - float(-lpa.mean())
    top = sorted(losses, key=lambda r: -abs(losses[r]))[:5]
    assert [m.index for m in changes.loss_movers] == top
    tokenizer = w.loaded.tokenizer
    for move in changes.loss_movers:
        lpa, lpb = per_token[move.index]
        assert move.delta == pytest.approx(losses[move.index], abs=1e-4)
        assert [t.position for t in move.tokens] == list(range(len(lpa) + 1))
        assert [t.delta for t in move.tokens[1:]] == pytest.approx((lpb - lpa).tolist(), abs=1e-4)
        assert math.isnan(move.tokens[0].delta)  # the first token is not predicted
        words = tokenizer.convert_ids_to_tokens(tokenizer(w.df["text"].iloc[move.index])["input_ids"])
        assert [t.token for t in move.tokens] == words
    every = sorted(((float((pb - pa)[t].abs()), r, t + 1) for r, (pa, pb) in per_token.items() for t in range(len(pa))),
                   reverse=True)
    assert [abs(t.delta) for t in changes.token_movers] == pytest.approx([d for d, _, _ in every[:5]], abs=1e-4)


def test_generation_side_by_side_on_a_workbench(lm_bench, classifier_bench):
    a, _ = _masks(lm_bench.shape)
    out = lm_bench.generate("the movie is", {"dense": None, "A": a}, max_new_tokens=6)
    assert [c.name for c in out] == ["dense", "A"] and out[1].heads_kept == int(a.sum())
    assert all(1 <= len(c.tokens) <= 6 for c in out)
    with pytest.raises(ValueError, match="causal language model"):
        classifier_bench.generate("the movie is", {"dense": None})


def test_mask_summary_rows(classifier_bench):
    bench = classifier_bench
    a, _ = _masks(bench.shape)
    dense, row = bench.summary(), bench.summary(a)
    assert dense.heads_kept == dense.heads_total == 8 and row.heads_kept == int(a.sum())
    assert row.flops_per_token < dense.flops_per_token and row.loss == bench.exact(a)["loss"]
    assert row.latency_ms is None


def test_a_recovered_mask_and_a_measured_latency_feed_the_comparisons(classifier_bench):
    bench = Workbench(classifier_bench.workload)
    keep = torch.ones(bench.shape, dtype=torch.bool)
    keep[0, :2] = False
    recovered = bench.recover(keep, "scales", calib=(bench.workload.batches, "the live set"))
    assert float(recovered.examples.loss.mean()) == pytest.approx(recovered.result["loss"], rel=1e-5)
    changes = bench.what_changed(keep, recovered)  # masked → recovered, example by example
    assert changes.n == len(bench.workload.df)
    assert bench.summary(keep).latency_ms is None and bench.measured_for(keep) is None
    measured = bench.measure(keep, batch_size=1, seq_len=8, repeats=1)
    assert bench.summary(keep).latency_ms == measured["pruned"]["latency_ms_median"]
    assert bench.summary().latency_ms == measured["dense"]["latency_ms_median"]
