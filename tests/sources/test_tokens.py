"""sources.tokens: one readable label per token (byte-level BPE markers decoded, white space made visible)."""
from __future__ import annotations

import numpy as np
from helpers.tiny import bert_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertTokenizer, PreTrainedTokenizerFast

from headprune.sources.tokens import display_tokens


def byte_level_bpe():
    """A GPT-2-style byte-level BPE tokenizer trained in-process on a few lines."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["good movie\nbad movie", "the good car  is\tfine", "hello world"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


def test_byte_level_markers_read_as_text_and_white_space_is_visible():
    tok = byte_level_bpe()
    ids = tok("good movie\n  the\tcar<eos>")["input_ids"]
    raw = tok.convert_ids_to_tokens(ids)
    assert "Ġmovie" in raw and "Ċ" in raw and "ĉ" in raw  # what a reader should not have to decode
    labels = display_tokens(tok, np.array(ids))  # any sequence of ints, e.g. a numpy row
    assert labels == ["good", "movie", "⏎", "␣", "␣", "the", "⇥", "car", "<eos>"]
    assert len(labels) == len(ids)


def test_wordpiece_tokens_and_special_tokens_stay_as_they_are(tmp_path):
    bert_tokenizer(tmp_path)  # writes vocab.txt
    tok = BertTokenizer.from_pretrained(str(tmp_path))
    ids = tok("good cats!")["input_ids"]
    assert display_tokens(tok, ids) == tok.convert_ids_to_tokens(ids) == ["[CLS]", "good", "c", "##a", "##t", "##s",
                                                                           "!", "[SEP]"]


def test_a_token_that_decodes_to_nothing_shows_its_raw_form():
    vocab = {"<unk>": 0, "▁": 1, "▁good": 2, "movie": 3}
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.decoder = decoders.Metaspace()  # a lone "▁" decodes to ""
    tok = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>")
    assert tok.decode([1]) == ""
    assert display_tokens(tok, [1, 2, 3, 0]) == ["▁", "good", "movie", "<unk>"]
