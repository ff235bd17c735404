"""The evaluation loop (headprune.evaluation.loop) against a manual loop and the models' own loss, under masks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.texts import TWELVE_TEXTS as TEXTS
from helpers.tiny import tiny_bert, tiny_gpt2, word_tokenizer

from headprune.evaluation.loop import evaluate
from headprune.sources.batches import make_batches


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
