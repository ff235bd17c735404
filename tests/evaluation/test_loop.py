"""Metrics checked by hand, the evaluation loop against a manual loop, masks, training and zero-shot."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tiny_text import bert_tokenizer, tiny_bert, tiny_gpt2, word_tokenizer

from headprune.evaluation.loop import evaluate
from headprune.evaluation.metrics import accumulate, batch_metrics, finalise, macro_f1
from headprune.evaluation.zeroshot import zero_shot_sentiment
from headprune.recovery.train import train
from headprune.sources.batches import make_batches
from headprune.sources.models import LoadedModel

TEXTS = pd.DataFrame({
    "text": ["good", "this movie is awful", "a car", "i love this great fine car ok", "bad", "the tweet is not ok",
             "great great movie", "hate this car", "ok fine", "awful awful bad", "love love", "the movie"],
    "label": [2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 2, 1],
})


# --------------------------------------------------------------------------------------- pure metrics
def test_classification_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2, 2])  # predictions 0, 1, 2, 0, 1: right, right, wrong, wrong, wrong
    total = accumulate(accumulate(None, batch_metrics(logits[:2], labels[:2], "classification")),
                       batch_metrics(logits[2:], labels[2:], "classification"))
    out = finalise(total)
    assert out["n"] == 5 and out["accuracy"] == pytest.approx(2 / 5)
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits, labels)))
    # per class F1 = 2TP / (2TP + FP + FN): class 0: TP1 FP1 FN0 → 2/3; class 1: TP1 FP1 FN1 → 1/2; class 2: 0
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # a class absent from labels and predictions does not count
    assert macro_f1(torch.tensor([[3, 0, 0], [0, 1, 0], [0, 0, 0]])) == pytest.approx(1.0)


def test_causal_lm_metrics_shift_and_ignore_padding():
    vocab = 5
    labels = torch.tensor([[1, 2, 3, -100]])  # last position is padding
    logits = torch.full((1, 4, vocab), -10.0)
    logits[0, 0, 2] = 10.0  # predicts token 2 after token 1: right
    logits[0, 1, 4] = 10.0  # predicts 4, truth 3: wrong
    logits[0, 2, 0] = 10.0  # predicts for the padding: ignored
    out = finalise(batch_metrics(logits, labels, "causal-lm"))
    assert out["tokens"] == 2 and out["next_token_accuracy"] == pytest.approx(0.5) and out["accuracy"] == out["next_token_accuracy"]
    expected = F.cross_entropy(logits[0, :2], torch.tensor([2, 3]))
    assert out["loss"] == pytest.approx(float(expected))
    assert out["perplexity"] == pytest.approx(math.exp(float(expected)))
    masked = finalise(batch_metrics(logits, torch.tensor([[-100, 4, -100, -100]]), "masked-lm"))
    assert masked["tokens"] == 1 and masked["accuracy"] == 1.0


def test_metrics_refuse_bad_inputs():
    with pytest.raises(ValueError, match="0..2"):
        batch_metrics(torch.zeros(2, 3), torch.tensor([0, 3]), "classification")
    with pytest.raises(ValueError, match="no examples"):
        finalise(None)
    with pytest.raises(ValueError, match="cannot add"):
        accumulate(batch_metrics(torch.zeros(1, 2), torch.tensor([0]), "classification"),
                   batch_metrics(torch.zeros(1, 2, 3), torch.tensor([[0, 1]]), "causal-lm"))


# ------------------------------------------------------------------------------------------- the loop
@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("tok"))


def test_evaluate_classifier_matches_a_manual_loop(bert_tok):
    model = tiny_bert(bert_tok)
    batches = make_batches(bert_tok, TEXTS, "classification", batch_size=5)
    out = evaluate(model, batches)
    assert {"loss", "accuracy", "macro_f1", "n", "seconds"} <= set(out)
    correct, losses = 0, []
    with torch.no_grad():
        for b in batches:
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits
            correct += int((logits.argmax(-1) == b["labels"]).sum())
            losses.append(F.cross_entropy(logits, b["labels"], reduction="none"))
    assert out["n"] == len(TEXTS)
    assert out["accuracy"] == pytest.approx(correct / len(TEXTS))
    assert out["loss"] == pytest.approx(float(torch.cat(losses).mean()), rel=1e-5)


def test_evaluate_under_a_mask(bert_tok):
    model = tiny_bert(bert_tok)
    batches = make_batches(bert_tok, TEXTS, "classification", batch_size=6)
    dense = evaluate(model, batches)
    assert evaluate(model, batches, torch.ones(2, 4, dtype=torch.bool))["loss"] == pytest.approx(dense["loss"], rel=1e-5)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[:, 1:] = False
    assert evaluate(model, batches, keep)["loss"] != pytest.approx(dense["loss"], rel=1e-3)
    assert evaluate(model, batches)["loss"] == pytest.approx(dense["loss"], rel=1e-6)  # the mask is gone afterwards


def test_evaluate_causal_lm_agrees_with_the_models_own_loss():
    tok = word_tokenizer()
    model = tiny_gpt2(tok)
    batches = make_batches(tok, TEXTS, "causal-lm", batch_size=len(TEXTS))
    out = evaluate(model, batches)
    assert {"loss", "perplexity", "next_token_accuracy", "accuracy", "tokens", "n", "seconds"} <= set(out)
    with torch.no_grad():
        hf_loss = model(**batches[0]).loss  # mean over predicted tokens, padding ignored
    assert out["loss"] == pytest.approx(float(hf_loss), rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(out["loss"]))


def test_evaluate_masked_lm(bert_tok):
    model = tiny_bert(bert_tok, head="masked-lm")
    out = evaluate(model, make_batches(bert_tok, TEXTS, "masked-lm", batch_size=4))
    assert out["task"] == "masked-lm" and 0 <= out["accuracy"] <= 1 and out["tokens"] >= len(TEXTS)


# -------------------------------------------------------------------------------------------- training
def test_train_reduces_the_loss_and_is_reproducible(bert_tok):
    batches = make_batches(bert_tok, TEXTS, "classification", batch_size=4)
    runs = []
    for _ in range(2):
        model = tiny_bert(bert_tok, seed=1)
        before = evaluate(model, batches)["loss"]
        summary = train(model, batches, epochs=8, lr=3e-3, seed=5)
        runs.append(summary["losses"])
        assert summary["steps"] == 8 * len(batches) and not model.training
    assert runs[0] == runs[1]
    assert evaluate(model, batches)["loss"] < before


def test_train_accepts_a_custom_loss_and_reports_progress():
    tok = word_tokenizer()
    model = tiny_gpt2(tok)
    batches = make_batches(tok, TEXTS, "causal-lm", batch_size=6)
    seen = []
    summary = train(model, batches, lr=1e-3, loss_fn=lambda m, b: m(**b).loss * 2,
                    progress=lambda f, msg: seen.append((f, msg)))
    assert summary["steps"] == 2 and seen[-1][0] == 1.0 and "loss" in seen[-1][1] and "ETA" not in seen[-1][1]


def test_zero_shot_sentiment_on_a_tiny_lm():
    tok = word_tokenizer()
    loaded = LoadedModel(model=tiny_gpt2(tok), tokenizer=tok, task="causal-lm", model_id="tiny", label_names=None,
                         source="local")
    tok.pad_token = tok.eos_token
    out = zero_shot_sentiment(loaded, TEXTS, chat=False, batch_size=5)
    assert out["n"] == len(TEXTS) and 0 <= out["accuracy"] <= 1 and 0 <= out["uncalibrated_accuracy"] <= 1
    assert sum(out["predicted"].values()) == len(TEXTS)
    # left padding with position ids: a text's scores do not depend on its batch mates
    one = zero_shot_sentiment(loaded, TEXTS.iloc[:1], chat=False, calibrate=False)
    assert one["predicted"] == zero_shot_sentiment(loaded, TEXTS.iloc[:1], chat=False, calibrate=False, batch_size=1)["predicted"]
    from headprune.evaluation.zeroshot import _label_word_log_probs, label_word_ids

    ids = torch.tensor(label_word_ids(tok, ["negative", "neutral", "positive"]))
    texts = ["the movie is good", "bad", "a car is a car ok fine"]
    together = _label_word_log_probs(loaded.model, tok, texts, ids, batch_size=3, max_length=64, add_special_tokens=False)
    alone = torch.cat([_label_word_log_probs(loaded.model, tok, [t], ids, batch_size=1, max_length=64,
                                             add_special_tokens=False) for t in texts])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
