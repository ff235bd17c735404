"""Data (tweets, files, Hub), batches and model loading: tiny data and tiny models only."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from tiny_text import bert_tokenizer, save, tiny_bert, tiny_gpt2, word_tokenizer

from headprune.core.types import IGNORE_INDEX
from headprune.presets import load_model
from headprune.sources.batches import make_batches
from headprune.sources.data import data_fingerprint, load_data
from headprune.sources.models import LoadedModel
from headprune.sources.tweets import TWEET_LABELS, load_tweets

LABEL2ID = {"negative": 0, "neutral": 1, "positive": 2}


# ------------------------------------------------------------------------------------------- tweets
def test_tweet_splits_are_deterministic_disjoint_and_balanced():
    splits = {name: load_tweets(name) for name in ("train", "validation", "test")}
    sizes = {name: len(df) for name, df in splits.items()}
    assert 37_000 < sum(sizes.values()) < 37_300  # de-duplicated
    assert 0.75 < sizes["train"] / sum(sizes.values()) < 0.85
    texts = {name: set(df["text"]) for name, df in splits.items()}
    assert len(texts["train"]) == sizes["train"]  # no duplicates inside a split
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    for df in splits.values():
        assert list(df.columns) == ["text", "label"]
        share = df["label"].value_counts(normalize=True)
        assert 0.38 < share[0] < 0.48 and 0.34 < share[1] < 0.44 and 0.14 < share[2] < 0.22
    assert load_tweets("test").equals(splits["test"])
    assert set(load_tweets("val")["text"]) == texts["validation"]
    assert set(load_tweets("dev")["text"]) == texts["validation"]
    assert TWEET_LABELS == ["negative", "neutral", "positive"]


def test_tweet_limit_is_a_seeded_shuffle_not_the_first_rows():
    a = load_tweets("test", limit=60, seed=0)
    assert len(a) == 60 and a["label"].nunique() == 3  # the file is sorted by label
    assert a.equals(load_tweets("test", limit=60, seed=0))
    assert not a.equals(load_tweets("test", limit=60, seed=1))
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        load_tweets("holdout")
    with pytest.raises(ValueError, match="positive whole number"):
        load_tweets("test", limit=0)


def test_tweets_follow_the_models_label_order():
    df = load_data("tweets", split="test", limit=30, label2id={"positive": 0, "neutral": 1, "negative": 2})
    base = load_tweets("test", limit=30)
    assert (df["label"] == base["label"].map({0: 2, 1: 1, 2: 0})).all()
    with pytest.raises(ValueError, match="do not match the tweets' labels"):
        load_data("tweets", limit=5, label2id={"spam": 0, "ham": 1})


# --------------------------------------------------------------------------------------------- files
ROWS = [{"sentence": "good movie", "sentiment": "positive", "other": 1},
        {"sentence": "awful car", "sentiment": "negative", "other": 2},
        {"sentence": "the car", "sentiment": "Neutral", "other": 3}]


@pytest.mark.parametrize("kind", ["csv", "tsv", "json", "jsonl", "parquet", "json_columns"])
def test_load_data_reads_files_guesses_columns_and_maps_labels(tmp_path, kind):
    df = pd.DataFrame(ROWS)
    path = tmp_path / f"data.{kind.split('_')[0]}"
    if kind == "csv":
        df.to_csv(path, index=False)
    elif kind == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif kind == "json":
        path.write_text(json.dumps(ROWS))
    elif kind == "json_columns":
        path.write_text(json.dumps({c: df[c].tolist() for c in df.columns}))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    else:
        df.to_parquet(path)
    out = load_data(str(path), label2id=LABEL2ID)
    assert list(out.columns) == ["text", "label"]
    assert out["text"].tolist() == ["good movie", "awful car", "the car"]
    assert out["label"].tolist() == [2, 0, 1]  # "Neutral" matched case-insensitively


def test_load_data_explicit_columns_pairs_and_limit(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"a": [f"first {i}" for i in range(20)], "b": [f"second {i}" for i in range(20)],
                  "gold": [i % 2 for i in range(20)]}).to_csv(path, index=False)
    out = load_data(str(path), text_column="a", text_pair_column="b", label_column="gold", limit=5, seed=3)
    assert list(out.columns) == ["text", "text_pair", "label"] and len(out) == 5
    assert out.equals(load_data(str(path), text_column="a", text_pair_column="b", label_column="gold", limit=5, seed=3))
    glue = tmp_path / "glue.jsonl"
    glue.write_text('{"sentence1": "a b", "sentence2": "c d", "label": 1}\n')
    assert load_data(str(glue))["text_pair"].tolist() == ["c d"]
    unlabelled = tmp_path / "plain.csv"
    unlabelled.write_text("text\nhello there\n")
    assert list(load_data(str(unlabelled)).columns) == ["text"]
    named = load_data(_write(tmp_path / "n.csv", "text,label\na,cat\nb,dog\n"))
    assert named["label"].tolist() == [0, 1] and named.attrs["label_names"] == ["cat", "dog"]


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_latin1_csv_is_read(tmp_path):
    out = load_data(_write(tmp_path / "l1.csv", "text,label\ncafé crème,0\n", "latin-1"))
    assert out["text"].tolist() == ["café crème"]


@pytest.mark.parametrize("content, match", [
    ("", "empty file"),
    ("text,label\n", "empty data: .* has no rows"),
    ("words,label\nhello,0\n", r"no text column .*columns found: words, label; name the text column"),
    ("text,label\nhello,angry\n", r"unknown label 'angry'.*knows: negative, neutral, positive"),
    ("text,label\nhello,7\n", "label 7 is out of range for a model with 3 labels"),
    (b"\x00\x01\x02binary\xff\xfe".decode("latin-1"), "not a text file"),
    ('text,label\n"unclosed,0\n', "could not parse"),
])
def test_bad_files_give_one_clear_reason(tmp_path, content, match):
    with pytest.raises(ValueError, match=match):
        load_data(_write(tmp_path / "bad.csv", content, "latin-1"), label2id=LABEL2ID)


def test_bad_data_specs(tmp_path):
    with pytest.raises(ValueError, match="no such file: .*nope.csv"):
        load_data(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="not available offline: someone/some-dataset"):
        load_data("someone/some-dataset")
    with pytest.raises(ValueError, match="unsupported file type '.xlsx'"):
        load_data(_write(tmp_path / "x.xlsx", "text\nhi\n"))
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_data(_write(tmp_path / "x.jsonl", '{"text": "a"}\n{oops\n'))
    with pytest.raises(ValueError, match="has no column 'body'.*columns found: text"):
        load_data(_write(tmp_path / "y.csv", "text\nhi\n"), text_column="body")


def test_data_fingerprint_tracks_content():
    a = pd.DataFrame({"text": ["x", "y"], "label": [0, 1]})
    assert data_fingerprint(a) == data_fingerprint(a.copy())
    assert data_fingerprint(a) != data_fingerprint(a.assign(label=[1, 0]))
    assert len(data_fingerprint(a)) == 64


# ------------------------------------------------------------------------------------------- batches
@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("tok"))


TEXTS = pd.DataFrame({"text": ["good", "this movie is awful", "a car", "i love this great fine car ok",
                               "bad", "the tweet is not ok"], "label": [2, 0, 1, 2, 0, 1]})


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


# -------------------------------------------------------------------------------------------- models
def test_load_local_classifier_folder(tmp_path, bert_tok):
    folder = save(tiny_bert(bert_tok, label_names=["negative", "neutral", "positive"]), bert_tok, tmp_path / "clf")
    loaded = load_model(str(folder))
    assert isinstance(loaded, LoadedModel)
    assert (loaded.task, loaded.source, loaded.meta["family"]) == ("classification", "local", "bert")
    assert loaded.label_names == ["negative", "neutral", "positive"]
    assert loaded.label2id == LABEL2ID
    assert not loaded.model.training and next(loaded.model.parameters()).dtype == torch.float32
    out = loaded.model(**{k: v for k, v in make_batches(loaded.tokenizer, TEXTS, "classification")[0].items()})
    assert out.logits.shape == (len(TEXTS), 3)


def test_load_local_causal_and_masked_lm(tmp_path, bert_tok):
    tok = word_tokenizer()
    lm = load_model(str(save(tiny_gpt2(tok), tok, tmp_path / "gpt2")))
    assert (lm.task, lm.label_names) == ("causal-lm", None)
    assert lm.tokenizer.pad_token == "<eos>" and lm.model.config.pad_token_id == tok.eos_token_id
    mlm = load_model(str(save(tiny_bert(bert_tok, head="masked-lm"), bert_tok, tmp_path / "mlm")))
    assert mlm.task == "masked-lm"


def test_bad_model_specs(tmp_path, bert_tok):
    with pytest.raises(ValueError, match="no such model folder: .*missing"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not available offline: someone/some-model"):
        load_model("someone/some-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_model(str(tmp_path / "file.txt"))


def test_unsupported_architecture_names_the_supported_families(tmp_path, bert_tok):
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=len(bert_tok), hidden_size=16, num_hidden_layers=1, ffn_dim=16,
                                     num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=64))
    folder = save(model, bert_tok, tmp_path / "opt")
    with pytest.raises(ValueError, match="unsupported architecture 'opt'.*bert.*gpt2.*llama"):
        load_model(str(folder))


def test_headless_model_and_remote_code_are_refused(tmp_path, bert_tok):
    from transformers import BertConfig, BertModel

    bare = save(BertModel(BertConfig(vocab_size=len(bert_tok), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16)), bert_tok, tmp_path / "bare")
    with pytest.raises(ValueError, match="no task head .*BertModel"):
        load_model(str(bare))
    folder = save(tiny_bert(bert_tok), bert_tok, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ships its own model code") as refused:
        load_model(str(folder))
    assert refused.value.option == "trust_remote_code"


def test_pruned_folder_loads_through_load_pruned(tmp_path, bert_tok):
    from headprune.model.storage import save_pruned
    from headprune.model.surgery import prune

    model = tiny_bert(bert_tok, label_names=["negative", "neutral", "positive"])
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = False
    folder = save_pruned(prune(model, keep), tmp_path / "pruned", bert_tok)
    loaded = load_model(str(folder))
    assert loaded.task == "classification" and "pruned" in loaded.meta
    batch = make_batches(loaded.tokenizer, TEXTS, "classification")[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    from headprune.model.intervene import masked

    with torch.inference_mode(), masked(model, keep):
        expected = model(**inputs).logits
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**inputs).logits, expected, rtol=1e-4, atol=1e-4)
