"""workbench.workload: a workload's key, row order, dense metrics and examples, sampling, and its up-front checks."""
from __future__ import annotations

import threading

import pytest

from headprune.core.errors import UserError
from headprune.evaluation.loop import evaluate
from headprune.model.layout import head_grid
from headprune.workbench.workload import ResultStore, check_max_length, open_workload

pytestmark = pytest.mark.usefixtures("one_thread")


def test_key_rows_and_dense_metrics(classifier_bench):
    w = classifier_bench.workload
    assert w.shape == head_grid(w.model) == (2, 4) and w.model is w.loaded.model
    assert w.key == f"{w.loaded.model_id}|{w.data_fingerprint}|80" and len(w.df) == 80
    rows = w.rows
    assert sorted(rows) == list(range(80)) and w.rows is rows  # computed once, then kept in the store
    assert sum(int(b["input_ids"].shape[0]) for b in w.batches) == 80 and w.settings["batch_size"] == 16
    labels = [int(label) for b in w.batches for label in b["labels"]]
    assert labels == [int(w.df["label"].iloc[r]) for r in rows]  # batch order maps back to rows
    dense = w.dense
    assert w.dense is dense and dense["n"] == 80
    assert dense["accuracy"] == evaluate(w.model, w.batches, task="classification")["accuracy"]


def test_example_ids_are_the_real_tokens_of_an_example(classifier_bench):
    w = classifier_bench.workload
    tokenizer = w.loaded.tokenizer
    for position in (0, 17, 79):
        text = w.df["text"].iloc[w.rows[position]]
        assert w.example_ids(position) == tokenizer(text, truncation=True, max_length=128)["input_ids"]
    with pytest.raises(UserError, match="is past the last example"):
        w.example_ids(80)


def test_a_position_past_the_end_is_named_as_given(classifier_bench):
    with pytest.raises(UserError, match="example position 100 is past the last example"):
        classifier_bench.workload.example_ids(100)


def test_with_limit_samples_as_open_workload_would(classifier_bench):
    w = classifier_bench.workload
    small = w.with_limit(20)
    assert len(small.df) == 20 and small.loaded is w.loaded and small.store is not w.store
    assert small.settings["limit"] == 20 and small.data_fingerprint != w.data_fingerprint
    fresh = open_workload(w.loaded.model_id, w.data_spec, limit=20, batch_size=16)
    assert small.df.equals(fresh.df) and small.key == fresh.key
    assert all((a["input_ids"] == b["input_ids"]).all() for a, b in zip(small.batches, fresh.batches))


def test_options_are_checked_before_any_data_is_read(classifier_bench, tmp_path):
    loaded = classifier_bench.workload.loaded
    assert check_max_length(loaded, 2) == 2 and check_max_length(loaded, 256) == 256
    for bad in (1, True, 64.0, None):
        with pytest.raises(UserError, match=f"max length must be a whole number ≥ 2, got {bad!r}") as caught:
            check_max_length(loaded, bad)
        assert caught.value.option == "max_length"
    with pytest.raises(UserError, match=r"max length 257 is more than this model reads \(256 tokens\)"):
        check_max_length(loaded, 257)
    missing = str(tmp_path / "not-there.csv")  # the model is loaded, the data never read
    with pytest.raises(UserError, match="max length 1000 is more than this model reads"):
        open_workload(loaded.model_id, missing, max_length=1000)
    with pytest.raises(UserError, match=r"unknown data options \['label'\]; known: text_column, text_pair_column"):
        open_workload(loaded.model_id, missing, data_options={"label": "y"})


def test_the_result_store_keeps_values_by_kind_and_key_across_threads():
    store = ResultStore()
    assert store.get("scores", ("a",)) is None and store.items("scores") == []
    assert store.put("scores", ("a",), 1) == 1
    threads = [threading.Thread(target=lambda i=i: store.put("curves", (i,), i * i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(store.items("curves")) == [((i,), i * i) for i in range(8)]
    store.put("scores", ("a",), 2)
    assert store.items("scores") == [(("a",), 2)] and store.get("scores", ("a",)) == 2 and store.get("scores") is None
