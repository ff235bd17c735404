"""Tiny tokenizers, models and workspaces on disk for the data / model / evaluation / CLI / dashboard tests
(built in-process, no network). The models come from the engine's `headprune.model.tiny.tiny_model`."""
from __future__ import annotations

import random
import string
from pathlib import Path

from headprune.model.tiny import tiny_model

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
    # transformers 5 ignores vocab_file= in the constructor (a 5-token tokenizer); from_pretrained reads the file
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)


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
    """A 2-layer, 4-head BERT of width `hidden` (32: tiny; wider makes each pass measurably slow) over
    `tokenizer`'s vocabulary, with named labels."""
    names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
    return tiny_model("bert", "classification" if head == "classification" else "masked-lm", seed=seed,
                      vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=hidden + 5, initializer_range=0.5, max_position_embeddings=256,
                      type_vocab_size=2, pad_token_id=0, num_labels=num_labels, id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)})


def tiny_gpt2(tokenizer, *, seed: int = 0):
    """A 2-layer, 4-head GPT-2 language model over `tokenizer`'s vocabulary (eos doubles as bos)."""
    return tiny_model("gpt2", "causal-lm", seed=seed, vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4,
                      n_positions=256, initializer_range=0.5, bos_token_id=tokenizer.eos_token_id,
                      eos_token_id=tokenizer.eos_token_id, num_labels=2, pad_token_id=None)


def tiny_llama(tokenizer):
    """The engine's tiny Llama (3 layers x 6 query heads in 2 KV groups) over `tokenizer`'s vocabulary, padded
    with its eos token."""
    return tiny_model("llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.eos_token_id)


def save(model, tokenizer, folder: Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_workspace(folder: Path, *, rows: int = 96, words: tuple[int, int] = (3, 12),
                   hidden: int = 32) -> tuple[Path, Path]:
    """A tiny BERT classifier (2 layers x 4 heads of width `hidden`, WordPiece tokenizer) saved to a folder, and a
    3-class CSV of `rows` texts of `words` (min, max) words each."""
    folder = Path(folder)
    tokenizer = bert_tokenizer(folder / "tok")
    model_dir = save(tiny_bert(tokenizer, label_names=["negative", "neutral", "positive"], hidden=hidden), tokenizer,
                     folder / "model")
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(rows):
        text = rng.choices(WORDS, k=rng.randint(*words))
        label = 0 if "bad" in text or "hate" in text else 2 if "good" in text or "love" in text else 1
        lines.append(f"{' '.join(text)},{label}")
    data = folder / "data.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return model_dir, data
