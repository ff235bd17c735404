"""Tiny tokenizers and models for the data / model / evaluation tests (built in-process, no network)."""
from __future__ import annotations

import string
from pathlib import Path

import torch

WORDS = ["good", "bad", "great", "awful", "fine", "ok", "love", "hate", "the", "a", "is", "this", "movie", "car",
         "negative", "neutral", "positive", "tweet", "sentiment", "answer", "not"]


def bert_tokenizer(folder: Path):
    """A WordPiece tokenizer covering any ASCII text (words, letters and ##letters)."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase + string.digits)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters),
             *string.punctuation]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)


def word_tokenizer(words=WORDS):
    """A GPT-2-like word-level tokenizer with eos but no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *words, *string.punctuation])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def tiny_bert(tokenizer, *, head: str = "classification", num_labels: int = 3, label_names=None, seed: int = 0,
              hidden: int = 32):
    """A 2-layer, 4-head BERT of width `hidden` (32: tiny; wider makes each pass measurably slow)."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    torch.manual_seed(seed)
    names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=hidden + 5, initializer_range=0.5, max_position_embeddings=256,
                        num_labels=num_labels, id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)})
    model = (BertForSequenceClassification if head == "classification" else BertForMaskedLM)(config)
    return model.eval()


def tiny_gpt2(tokenizer, *, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                        initializer_range=0.5, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def save(model, tokenizer, folder: Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
