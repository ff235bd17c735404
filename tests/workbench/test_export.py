"""workbench.export: the reproducibility record of a mask, and the pruned model saved, reloaded and checked."""
from __future__ import annotations

import json

import pytest
import torch

from headprune.core.errors import OutputExistsError, UserError
from headprune.core.versions import library_versions
from headprune.model.layout import kept_mask, parameter_count
from headprune.model.storage import read_pruned_record
from headprune.presets import load_model
from headprune.recovery.lsq import Recovery
from headprune.scoring.cache import model_fingerprint
from headprune.workbench.export import (
    prune_and_save,
    reproducibility_record,
    save_checked,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def mask():
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = keep[1, 1] = False
    return keep


def test_the_reproducibility_record(classifier_bench):
    w = classifier_bench.workload
    after = {"accuracy": 0.5, "loss": 1.2, "n": 80, "perplexity": 3.0}
    latency = {side: {"latency_ms_median": 2.0, "latency_ms_p10": 1.5, "latency_ms_p90": 3.0, "extra": 9}
               for side in ("dense", "pruned")}
    latency.update(speedup=1.3, batch_size=8, seq_len=64, repeats=5, threads=1, other="left out")
    record = reproducibility_record(w, mask(), after=after, scores={"metric": "norm"}, latency=latency,
                                    versions={"onnx": "1.0"})
    assert record["model"] == {"id": w.loaded.model_id, "fingerprint": model_fingerprint(w.model), "family": "bert",
                               "task": "classification", "grid": [2, 4]}
    assert record["data"]["spec"] == w.data_spec and record["data"]["examples"] == 80
    assert record["data"]["fingerprint"] == w.data_fingerprint and "limit" not in record["data"]
    assert record["data"]["batch_size"] == 16 and "data_fingerprint" not in record["data"]
    keys = [k for k in ("accuracy", "macro_f1", "loss", "n") if k in w.dense]
    assert record["before"] == {k: w.dense[k] for k in keys} and list(record["before"]) == keys
    assert record["after"] == {"accuracy": 0.5, "loss": 1.2, "n": 80}  # perplexity does not apply to a classifier
    assert record["heads_kept"] == 4 and record["scores"] == {"metric": "norm"}
    assert record["versions"] == library_versions({"onnx": "1.0"}) and record["seeds"]["data_sample"] == 0
    assert record["latency"]["dense"] == {"latency_ms_median": 2.0, "latency_ms_p10": 1.5, "latency_ms_p90": 3.0}
    assert record["latency"]["speedup"] == 1.3 and "other" not in record["latency"]
    json.dumps(record, allow_nan=False)
    assert "latency" not in reproducibility_record(w, mask(), after={})


def test_prune_and_save_writes_a_smaller_model_that_reloads_equal(classifier_bench, tmp_path):
    w = classifier_bench.workload
    keep = mask()
    report = prune_and_save(w, keep, tmp_path / "pruned", meta={"note": "test"})
    assert report.path == str(tmp_path / "pruned") and report.matches and report.max_abs_diff < 1e-3
    assert not report.recovered and report.seconds > 0
    d, dh = w.model.config.hidden_size, w.model.config.hidden_size // 4
    per_head = 3 * (d * dh + dh) + d * dh  # q, k, v rows and biases, output projection columns
    assert report.params_before == parameter_count(w.model)
    assert report.params_after == report.params_before - 4 * per_head
    record = read_pruned_record(tmp_path / "pruned")
    assert record["meta"] == {"note": "test"} and record["kept_heads"] == [[3], [0, 2, 3]]
    reloaded = load_model(str(tmp_path / "pruned"))
    assert torch.equal(kept_mask(reloaded.model), keep) and reloaded.label_names == w.loaded.label_names
    assert reloaded.tokenizer("good movie")["input_ids"] == w.loaded.tokenizer("good movie")["input_ids"]
    assert kept_mask(w.model).all()  # the shared model is untouched
    with pytest.raises(OutputExistsError, match="already exists"):
        prune_and_save(w, keep, tmp_path / "pruned")
    assert prune_and_save(w, keep, tmp_path / "pruned", overwrite=True).matches


def test_a_recovery_is_baked_in_only_for_its_own_mask(classifier_bench, tmp_path):
    w = classifier_bench.workload
    keep = mask()
    recovery = Recovery.of_mask(w.model, keep)
    report = prune_and_save(w, keep, tmp_path / "recovered", recovery=recovery)
    assert report.recovered and report.matches
    other = keep.clone()
    other[1, 0] = False
    with pytest.raises(UserError, match="the recovery was made for another mask"):
        prune_and_save(w, other, tmp_path / "other", recovery=recovery)
    assert not (tmp_path / "other").exists()


def test_save_checked_compares_with_the_models_own_logits_by_default(classifier_bench, tmp_path):
    w = classifier_bench.workload
    report = save_checked(w, w.model, tmp_path / "dense", extra_files={"notes.txt": "hello"})
    assert report.matches and report.max_abs_diff < 1e-5 and report.params_after == report.params_before
    assert (tmp_path / "dense" / "notes.txt").read_text() == "hello"
    wrong = torch.zeros(16, 3)  # logits that are not the model's: the check says so
    assert not save_checked(w, w.model, tmp_path / "dense2", expected=wrong).matches
