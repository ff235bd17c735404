"""`headprune score` end to end on a tiny classifier saved to disk and a tiny CSV."""
from __future__ import annotations

import json

import pytest
from helpers.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_score_writes_a_scores_file(workload, capsys, tmp_path):
    folder, csv, _ = workload
    code, out = run(capsys, ["score", "--model", str(folder), "--data", str(csv), "--metric", "gradient",
                             "--out", str(tmp_path / "s.json"), "--normalise-layers", "--json", "-q", "--no-cache"])
    assert code == 0, out.err
    result = json.loads(out.out)
    record = json.loads((tmp_path / "s.json").read_text())
    assert record["metric"] == "gradient" and record["model_id"] == str(folder) and record["options"]["normalise_layers"]
    assert record["scores"] == result["scores"] and len(record["scores"]) == 2 and len(record["scores"][0]) == 4
    code, out = run(capsys, ["score", "--model", str(folder), "--data", str(csv), "-q"])
    assert code == 0 and "layer" in out.out
