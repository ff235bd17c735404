"""workbench.records: masks as hashable memo keys, and a recovered mask's record on a real tiny classifier."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headprune.evaluation.loop import evaluate_examples
from headprune.recovery.lsq import Recovery
from headprune.workbench.records import RecoveredMask, mask_key

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mask_key_is_the_same_for_every_form_of_one_mask():
    rows = [[True, False, True], [False, True, True]]
    key = mask_key(torch.tensor(rows))
    assert key == (True, False, True, False, True, True) and all(type(v) is bool for v in key)
    assert mask_key(rows) == mask_key(np.array(rows)) == mask_key(torch.tensor(rows, dtype=torch.int64)) == key
    assert mask_key(torch.tensor(rows).float()) == key  # 0/1 floats
    other = torch.tensor(rows)
    other[1, 2] = False
    memo = {key: "first", mask_key(other): "second"}
    assert len(memo) == 2 and memo[mask_key(np.array(rows))] == "first"


def test_a_recovered_mask_reads_its_keep_from_the_recovery(classifier_bench):
    model, workload = classifier_bench.model, classifier_bench.workload
    keep = torch.ones(workload.shape, dtype=torch.bool)
    keep[0, 1] = keep[1, 3] = False
    recovery = Recovery.of_mask(model, keep)
    with recovery.applied(model):
        result, examples = evaluate_examples(model, workload.batches, task="classification")
    recovered = RecoveredMask(recovery=recovery, result=result, calibrated_on="the same examples", examples=examples)
    assert torch.equal(recovered.keep, keep) and recovered.keep is recovery.keep
    assert list(recovered) == ["recovery", "result", "calibrated_on", "examples"]
    assert recovered["calibrated_on"] == "the same examples" and recovered["result"]["n"] == len(workload.df)
    assert RecoveredMask(recovery, None, "x")["examples"] is None
    record = json.loads(json.dumps(recovered.to_dict()))  # plain JSON all the way down
    assert record["recovery"]["keep"] == keep.tolist() and record["recovery"]["method"] == "mask"
    assert record["result"]["n"] == len(workload.df) and record["calibrated_on"] == "the same examples"
    with pytest.raises(AttributeError):
        recovered.calibrated_on = "elsewhere"  # frozen
