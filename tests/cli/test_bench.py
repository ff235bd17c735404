"""`headprune bench` runs a benchmark script from the checkout."""
from __future__ import annotations

import pytest
from helpers.cli import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_runs_a_script_from_the_checkout(capsys):
    code, out = run(capsys, ["bench", "recovery", "--", "--help"])
    assert code == 0, out.err
