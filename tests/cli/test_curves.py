"""`headprune roles` and `headprune curves` end to end."""
from __future__ import annotations

import json

import pytest
from helpers.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_roles_and_curves(workload, capsys):
    folder, csv, _ = workload
    code, out = run(capsys, ["roles", "--model", str(folder), "--data", str(csv), "--json", "-q"])
    assert code == 0, out.err
    roles = json.loads(out.out)["roles"]
    assert all({"layer", "head", "role", "statistic", "value"} <= set(r) for r in roles)
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(csv), "--fractions", "0,0.5",
                             "--random-seeds", "2", "--json", "-q"])
    assert code == 0, out.err
    result = json.loads(out.out)
    assert [r["heads_kept"] for r in result["curve"]] == [8, 4] and len(result["random"]) == 2
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(csv), "--fractions", "0,0.5", "-q"])
    assert code == 0 and "random" in out.out
    code, out = run(capsys, ["curves", "--model", str(folder), "--data", str(csv), "--fractions", "0,0.5,0.75",
                             "--mode", "iterative", "--step", "0.25", "--stop-below", "0", "--random-seeds", "0",
                             "--json", "-q"])
    assert code == 0, out.err
    assert [r["heads_kept"] for r in json.loads(out.out)["curve"]] == [8, 4, 2]
