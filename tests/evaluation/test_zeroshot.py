"""Zero-shot sentiment from a language model (headprune.evaluation.zeroshot)."""
from __future__ import annotations

import torch
from helpers.texts import TWELVE_TEXTS as TEXTS
from helpers.tiny import tiny_gpt2, word_tokenizer

from headprune.evaluation.zeroshot import zero_shot_sentiment
from headprune.sources.models import LoadedModel


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
