"""The training loop (headprune.recovery.train): the loss falls, runs repeat, custom losses and progress."""
from __future__ import annotations

from helpers.texts import TWELVE_TEXTS as TEXTS
from helpers.tiny import tiny_bert, tiny_gpt2, word_tokenizer

from headprune.evaluation.loop import evaluate
from headprune.recovery.train import train
from headprune.sources.batches import make_batches


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
