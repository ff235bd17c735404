"""sources.files: reading local tables (encodings, JSON shapes, saved datasets) and selecting rows by a split column."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from headprune.core.errors import UserError
from headprune.sources.files import file_has_split_column, read_local, select_split


def test_text_encodings_and_binary_files(tmp_path):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftext,label\nnaïve,1\n".encode("utf-8"))
    out = read_local(bom, None)
    assert list(out.columns) == ["text", "label"] and out["text"].tolist() == ["naïve"]  # no BOM in the header
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("text\tlabel\ncrème brûlée\t0\n".encode("latin-1"))
    assert read_local(latin, None)["text"].tolist() == ["crème brûlée"]
    tabs = tmp_path / "tabs.tsv"
    tabs.write_text("text\tlabel\n" + "a\tb\f\t1\n" * 50)  # tabs, form feeds and newlines are text
    assert len(read_local(tabs, None)) == 50
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"text,label\n" + bytes(range(1, 32)) * 4)
    with pytest.raises(UserError, match="data.csv is not a text file"):
        read_local(binary, None)
    (tmp_path / "blank.csv").write_text("  \n\n")
    with pytest.raises(UserError, match="empty file"):
        read_local(tmp_path / "blank.csv", None)
    (tmp_path / "bad.parquet").write_text("not parquet at all")
    with pytest.raises(UserError, match="could not read .*bad.parquet as Parquet"):
        read_local(tmp_path / "bad.parquet", None)


def test_the_json_shapes_a_file_may_have(tmp_path):
    records = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    expected = pd.DataFrame(records)
    shapes = {"list.json": json.dumps(records), "wrapped.json": json.dumps({"data": records}),
              "columns.json": json.dumps({"text": ["a", "b"], "label": [0, 1]}),
              "lines.json": "\n".join(json.dumps(r) for r in records) + "\n",  # JSON Lines saved as .json
              "lines.ndjson": json.dumps(records[0]) + "\n\n" + json.dumps(records[1])}
    for name, text in shapes.items():
        (tmp_path / name).write_text(text)
        pd.testing.assert_frame_equal(read_local(tmp_path / name, None), expected, obj=name)
    for name, text, match in [("scalars.json", "[1, 2]", "expected a list of records or a dict of columns"),
                              ("ragged.json", '{"text": ["a", "b"], "label": [0]}', "expected a list of records"),
                              ("row.jsonl", '{"text": "a"}\n[1]\n', "line 2 is not a JSON object")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=match):
            read_local(tmp_path / name, None)


def test_a_split_column_selects_rows_by_name_or_alias():
    table = pd.DataFrame({"text": list("abcde"), "Split": ["train", " dev", "test", "train", "dev "]})
    assert select_split(table, "validation", "t.csv")["text"].tolist() == ["b", "e"]
    assert select_split(table, "train", "t.csv").to_dict("list") == {"text": ["a", "d"]}  # the column goes
    assert select_split(table, None, "t.csv", default_split="test")["text"].tolist() == ["c"]
    with pytest.raises(UserError, match=r"t.csv \(column 'Split'\) has no split 'holdout'; splits found: dev, test, train"):
        select_split(table, "holdout", "t.csv")
    plain = pd.DataFrame({"text": ["a"]})
    assert select_split(plain, None, "p.csv") is plain  # a plain file is one split: all of it
    with pytest.raises(UserError, match="p.csv is a single file without a 'split' column") as caught:
        select_split(plain, "train", "p.csv")
    assert caught.value.option == "split"


def test_every_row_of_the_split_is_selected_whatever_its_spelling():
    table = pd.DataFrame({"text": list("abcd"), "split": ["dev", "Dev", "validation", "train"]})
    assert select_split(table, "validation", "t.csv")["text"].tolist() == ["a", "b", "c"]


def test_file_has_split_column(tmp_path):
    (tmp_path / "s.csv").write_text("text,split\na,train\n")
    (tmp_path / "p.csv").write_text("text\na\n")
    (tmp_path / "x.xlsx").write_text("text,split\na,train\n")
    assert file_has_split_column(tmp_path / "s.csv") and not file_has_split_column(tmp_path / "p.csv")
    assert not file_has_split_column(tmp_path / "x.xlsx")  # unreadable: no split column, no error


def test_saved_datasets_and_plain_folders(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"]}),
                          "dev": datasets.Dataset.from_dict({"text": ["c"]})}).save_to_disk(str(tmp_path / "ds"))
    assert read_local(tmp_path / "ds", "val")["text"].tolist() == ["c"]
    assert read_local(tmp_path / "ds", None, default_split="train")["text"].tolist() == ["a", "b"]
    with pytest.raises(UserError, match="has no split 'test'; splits found: train, dev"):
        read_local(tmp_path / "ds", None)
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder is a folder, not a data file or a dataset saved with save_to_disk"):
        read_local(tmp_path / "folder", None)
