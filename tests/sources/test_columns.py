"""sources.columns: guessing text / pair / label columns by name, and turning labels into integer ids."""
from __future__ import annotations

import pandas as pd
import pytest

from headprune.core.errors import UserError
from headprune.sources.columns import LABEL_COLUMNS, TEXT_COLUMNS, to_standard

LABEL2ID = {"negative": 0, "neutral": 1, "positive": 2}


def standard(frame, text=None, pair=None, label=None, label2id=None):
    return to_standard(pd.DataFrame(frame), "data.csv", text, pair, label, label2id)


def test_columns_are_guessed_by_name_in_any_case():
    out = standard({"ID": [1, 2], "Review": ["good", None], "Sentiment": ["Positive", " negative "]},
                   label2id=LABEL2ID)
    assert list(out.columns) == ["text", "label"]
    assert out["text"].tolist() == ["good", ""] and out["label"].tolist() == [2, 0]  # case and spaces ignored
    pairs = standard({"premise": ["a", "b"], "hypothesis": ["c", "d"], "gold_label": [0, 1]})
    assert pairs["text_pair"].tolist() == ["c", "d"] and pairs["label"].tolist() == [0, 1]
    chosen = standard({"a": ["x"], "B": ["y"], "C": [1]}, text="a", pair="b", label="c")  # wanted, any case
    assert chosen.to_dict("list") == {"text": ["x"], "text_pair": ["y"], "label": [1]}
    unlabelled = standard({"text": ["x"], "label": ["ignored"]}, label="text")  # the text is never the label
    assert list(unlabelled.columns) == ["text"]
    assert TEXT_COLUMNS[0] == "text" and LABEL_COLUMNS[0] == "label"


def test_missing_columns_are_named_with_the_columns_found():
    many = {f"column_{i}_with_a_rather_long_name": ["x"] for i in range(10)}
    with pytest.raises(UserError) as caught:
        standard(many)
    message = str(caught.value)
    assert caught.value.option == "text_column" and "data.csv has no text column (looked for text, question, sentence" in message
    assert "column_0_with_a_rather_long_n…" in message and "column_8" not in message and "(+2 more)" in message
    with pytest.raises(UserError, match=r"data.csv has no column 'labels'; columns found: text, y") as caught:
        standard({"text": ["x"], "y": [1]}, label="labels")
    assert caught.value.option == "label_column"


def test_labels_become_integer_ids():
    assert standard({"text": list("ab"), "label": [True, False]})["label"].tolist() == [1, 0]
    assert standard({"text": list("ab"), "label": [1.0, 0.0]})["label"].dtype == "int64"
    assert standard({"text": list("ab"), "label": [" 1", "0 "]})["label"].tolist() == [1, 0]  # numbers as text
    named = standard({"text": list("abc"), "label": ["dog", "cat", "dog"]})
    assert named["label"].tolist() == [1, 0, 1] and named.attrs["label_names"] == ["cat", "dog"]
    assert "label_names" not in standard({"text": ["a"], "label": ["positive"]}, label2id=LABEL2ID).attrs


@pytest.mark.parametrize("labels, label2id, match", [
    ([0, None], None, r"data.csv: column 'label' has a missing label \(row 2\)"),
    ([0.5, 1.0], None, "holds non-integer numbers"),
    ([0, 3], LABEL2ID, r"label 3 is out of range for a model with 3 labels \(negative, neutral, positive\)"),
    (["angry", "sad", "positive"], LABEL2ID, r"unknown label 'angry' \(and 1 more\); the model knows: negative"),
])
def test_bad_labels_say_what_is_wrong(labels, label2id, match):
    with pytest.raises(UserError, match=match):
        standard({"text": ["x"] * len(labels), "label": labels}, label2id=label2id)


def test_a_question_sentence_table_reads_as_a_pair():
    out = standard({"question": ["who?"], "sentence": ["me."], "label": [0]})
    assert out["text"].tolist() == ["who?"] and out["text_pair"].tolist() == ["me."]
