"""Loading data (headprune.sources.data): the tweets in a model's label order, files of every type with their
columns guessed or named, one clear reason for each bad file or spec, fingerprints."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers.texts import LABEL2ID

from headprune.sources.data import data_fingerprint, load_data
from headprune.sources.tweets import load_tweets


def test_tweets_follow_the_models_label_order():
    df = load_data("tweets", split="test", limit=30, label2id={"positive": 0, "neutral": 1, "negative": 2})
    base = load_tweets("test", limit=30)
    assert (df["label"] == base["label"].map({0: 2, 1: 1, 2: 0})).all()
    with pytest.raises(ValueError, match="do not match the tweets' labels"):
        load_data("tweets", limit=5, label2id={"spam": 0, "ham": 1})


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
