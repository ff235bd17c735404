"""What a mask did to each example: the live evaluator's per-example outputs and the comparison of two masks
equal a brute-force run of every example on its own; responsible heads; greedy generation under a mask."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_text import WORDS, save, tiny_gpt2, word_tokenizer

from headprune.evaluation.examples import compare_examples, responsible_heads
from headprune.evaluation.generation import greedy_continuation
from headprune.evaluation.live import LiveEvaluator
from headprune.evaluation.loop import evaluate_examples
from headprune.model.intervene import masked
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_model
from headprune.workbench import Workbench, open_workload

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread of a shared machine


def _masks(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=gen) > 0.3
    b = torch.rand(shape, generator=gen) > 0.6
    return a, b


@pytest.fixture(scope="module")
def classifier_bench(tmp_path_factory):
    from test_app import tiny_workspace

    model_dir, data = tiny_workspace(tmp_path_factory.mktemp("examples"), rows=80)
    return Workbench(open_workload(str(model_dir), str(data), batch_size=16))


@pytest.fixture(scope="module")
def lm_bench(tmp_path_factory):
    import random

    folder = tmp_path_factory.mktemp("lm")
    tokenizer = word_tokenizer()
    save(tiny_gpt2(tokenizer), tokenizer, folder / "gpt2")
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 10))) for _ in range(24)]
    pd.DataFrame({"text": texts}).to_csv(folder / "text.csv", index=False)
    return Workbench(open_workload(str(folder / "gpt2"), str(folder / "text.csv"), batch_size=5))


def _alone(bench, row, keep):
    """Brute force: logits of data-frame row `row` run on its own (no padding, batch of one) under `keep`."""
    w = bench.workload
    enc = w.loaded.tokenizer(str(w.df["text"].iloc[row]), truncation=True, max_length=w.settings["max_length"],
                             return_tensors="pt")
    with masked(w.model, keep), torch.inference_mode():
        kwargs = {"use_cache": False} if w.loaded.task == "causal-lm" else {}
        return w.model(**enc, **kwargs).logits[0], enc["input_ids"][0]


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


def test_outputs_of_the_live_evaluator_equal_a_full_pass():
    model = tiny_model("llama")
    from headprune.model.tiny import tiny_batch

    batches = [tiny_batch(model, seed=s) for s in range(2)]
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[1, 2:5] = False
    live = LiveEvaluator(model, batches)
    live.evaluate(keep)
    _, full = evaluate_examples(model, batches, keep)
    assert torch.allclose(live.examples.loss, full.loss, atol=1e-5)
    for x, y in zip(live.examples.token_logprob, full.token_logprob):
        assert torch.equal(x.isnan(), y.isnan()) and torch.allclose(x.nan_to_num(), y.nan_to_num(), atol=1e-5)


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


def test_greedy_continuation_under_a_mask_equals_the_pruned_models_generate():
    model = tiny_model("llama")
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[0, :3] = keep[2, 4] = False
    prompt = [5, 9, 17, 3]
    masked_ids = greedy_continuation(model, prompt, keep=keep, max_new_tokens=8)
    pruned = prune(model, keep)
    expected = pruned.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, min_new_tokens=8,
                               pad_token_id=0)[0, len(prompt):].tolist()
    assert masked_ids == expected
    assert greedy_continuation(model, prompt, max_new_tokens=8) != masked_ids  # the mask changes the text
    assert greedy_continuation(model, prompt, keep=keep, max_new_tokens=8) == masked_ids  # deterministic
    with pytest.raises(ValueError, match="causal language model"):
        greedy_continuation(tiny_model("bert"), prompt)
    with pytest.raises(ValueError, match="from 1 to"):
        greedy_continuation(model, prompt, max_new_tokens=0)


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


def test_live_set_is_sized_from_the_measured_dense_pass(classifier_bench):
    bench = Workbench(classifier_bench.workload)
    w = bench.workload
    n = len(w.df)
    assert bench.live_size(target_s=1e9) == n and bench.live_size(target_s=0.0) == 32
    per_example = 0.5 * bench.dense.seconds / n  # a toggle re-runs about half a dense pass
    assert bench.live_size(target_s=per_example * 40.5) == 40
    seconds, measured = bench.toggle_seconds()
    assert seconds == pytest.approx(0.5 * bench.dense.seconds) and not measured
    keep = torch.ones(w.shape, dtype=torch.bool)
    keep[1, 0] = False
    bench.exact(keep)
    seconds, measured = bench.toggle_seconds()
    assert measured and seconds == bench.exact(keep).seconds
    smaller = w.with_limit(40)  # the same sample as opening the workload with --limit 40
    again = open_workload(w.loaded.model_id, w.data_spec, limit=40, batch_size=w.settings["batch_size"])
    assert smaller.df.equals(again.df) and smaller.key == again.key and len(smaller.batches) == len(again.batches)


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
