"""Batches (headprune.sources.batches) for classification, causal and masked language modelling."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers.texts import SIX_TEXTS as TEXTS
from helpers.tiny import word_tokenizer

from headprune.core.types import IGNORE_INDEX
from headprune.sources.batches import make_batches


def test_classification_batches(bert_tok):
    batches = make_batches(bert_tok, TEXTS, "classification", batch_size=4)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 2]
    lengths = [int(m.sum()) for b in batches for m in b["attention_mask"]]
    assert lengths == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert b["labels"].dtype == torch.int64 and b["labels"].shape == (b["input_ids"].shape[0],)
        assert b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max())  # padded to its own longest
        assert (b["input_ids"][b["attention_mask"] == 0] == bert_tok.pad_token_id).all()
    labels = sorted(int(x) for b in batches for x in b["labels"])
    assert labels == sorted(TEXTS["label"])
    again = make_batches(bert_tok, TEXTS, "classification", batch_size=4)
    assert again[0]["input_ids"] is batches[0]["input_ids"]  # cached: tokenised once
    assert len(make_batches(bert_tok, TEXTS, "classification", batch_size=4, limit=3)[0]["labels"]) == 3
    with pytest.raises(ValueError, match="no labels"):
        make_batches(bert_tok, TEXTS[["text"]], "classification")
    with pytest.raises(ValueError, match="data is empty"):
        make_batches(bert_tok, TEXTS.iloc[:0], "classification")


def test_causal_lm_batches_pad_with_eos_and_ignore_padding():
    tok = word_tokenizer()
    assert tok.pad_token is None
    batches = make_batches(tok, TEXTS, "causal-lm", batch_size=3)
    for b in batches:
        assert "token_type_ids" not in b
        pad = b["attention_mask"] == 0
        assert (b["input_ids"][pad] == tok.eos_token_id).all()
        assert (b["labels"][pad] == IGNORE_INDEX).all()
        assert (b["labels"][~pad] == b["input_ids"][~pad]).all()
    assert tok.pad_token is None  # the shared tokenizer is not modified


def test_masked_lm_batches_mask_about_15_percent_never_specials(bert_tok):
    df = pd.DataFrame({"text": ["the movie is good and this car is great ok fine " * 3] * 40})
    batches = make_batches(bert_tok, df, "masked-lm", batch_size=8, seed=1)
    masked = total = 0
    for b in batches:
        chosen = b["labels"] != IGNORE_INDEX
        assert chosen.any(dim=1).all()  # every row predicts at least one token
        assert (b["input_ids"][chosen] == bert_tok.mask_token_id).all()
        special = torch.isin(b["labels"], torch.tensor([bert_tok.cls_token_id, bert_tok.sep_token_id, bert_tok.pad_token_id]))
        assert not special.any()
        masked += int(chosen.sum())
        total += int(b["attention_mask"].sum()) - 2 * b["input_ids"].shape[0]
    assert 0.10 < masked / total < 0.20
    same = make_batches(bert_tok, df.copy(), "masked-lm", batch_size=8, seed=1)
    assert all(torch.equal(x["labels"], y["labels"]) for x, y in zip(batches, same))
