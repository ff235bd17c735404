"""`headprune roles` end to end: head role tags of a tiny classifier on disk, as JSON and as a table, and bad input."""
from __future__ import annotations

import json

import pytest
from helpers.cli import run
from helpers.tiny import tiny_workspace

from headprune.scoring.roles import COLUMNS, head_roles
from headprune.workbench import open_workload

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny BERT classifier folder with a WordPiece tokenizer, and a 40-row CSV."""
    return tiny_workspace(tmp_path_factory.mktemp("roles"), rows=40)


def test_roles_as_json_are_the_engines_tags(saved, capsys):
    model_dir, data = saved
    code, out = run(capsys, ["roles", "--model", model_dir, "--data", data, "--max-examples", "12", "--batch-size",
                             "8", "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["command"] == "roles" and result["model"] == str(model_dir)
    workload = open_workload(str(model_dir), str(data), batch_size=8)
    expected = head_roles(workload.model, workload.batches, max_examples=12).to_dict(orient="records")
    assert len(expected) > 0 and len(result["roles"]) == len(expected)
    for got, want in zip(result["roles"], expected):
        assert list(got) == COLUMNS and {k: got[k] for k in COLUMNS[:4]} == {k: want[k] for k in COLUMNS[:4]}
        assert got["value"] == pytest.approx(want["value"], rel=1e-6)
    fewer = head_roles(workload.model, workload.batches, max_examples=1).to_dict(orient="records")
    assert fewer != expected  # --max-examples is what the tags were averaged over


def test_roles_as_a_table(saved, capsys):
    model_dir, data = saved
    code, out = run(capsys, ["roles", "--model", model_dir, "--data", data, "--max-examples", "12", "-q"])
    assert code == 0, out.err
    lines = out.out.rstrip("\n").splitlines()
    assert lines[0] == f"model  {model_dir}" and lines[1].split() == ["layer", "head", "role", "statistic", "value"]
    code, again = run(capsys, ["roles", "--model", model_dir, "--data", data, "--max-examples", "12", "--json", "-q"])
    rows = json.loads(again.out)["roles"]
    assert len(lines) == 2 + len(rows)
    for line, row in zip(lines[2:], rows):
        fields = line.split()
        assert fields[:3] == [str(row["layer"]), str(row["head"]), row["role"]]
        assert row["statistic"] in line and fields[-1] == f"{row['value']:.3f}"


@pytest.mark.parametrize("argv, match", [
    (["--max-examples", "0"], "argument --max-examples: expected a number ≥ 1, got 0 (see headprune roles --help)"),
    (["--max-examples", "many"], "argument --max-examples: expected a whole number, got 'many'"),
    (["--max-length", "1"], "error: --max-length: max length must be a whole number ≥ 2, got 1"),
    (["--split", "train"], "is a single file without a 'split' column"),
    (["--label-column", "stars"], "error: --label-column: "),  # the engine's option, named as the flag
    (["--label-column", "stars"], "data.csv has no column 'stars'; columns found: text, label"),
])
def test_bad_input_exits_2_with_one_line(saved, capsys, argv, match):
    model_dir, data = saved
    code, out = run(capsys, ["roles", "--model", model_dir, "--data", data, "-q", *argv])
    assert code == 2 and out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("headprune: error: ") and match in lines[0], out.err


def test_the_model_is_required(capsys):
    code, out = run(capsys, ["roles", "--data", "tweets"])
    assert code == 2 and "the following arguments are required: --model" in out.err
