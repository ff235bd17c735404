"""The house's shape, checked: the layer contracts (import-linter, as CI's `lint-imports`) and the size limits
of issue 14 (no engine module over ~400 lines, no function over ~80)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "headprune"
MODULE_LINES = 420  # "~400"
FUNCTION_LINES = 80


def _engine_files() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


def test_the_layer_contracts_hold():
    """Lower stages never import higher ones, the engine never imports Streamlit, figures stay pure."""
    pytest.importorskip("importlinter")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          "sys.exit(lint_imports())"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_no_engine_module_is_too_long():
    long = {str(p.relative_to(ROOT)): n for p in _engine_files() if (n := len(p.read_text().splitlines())) > MODULE_LINES}
    assert not long, f"split these modules (> {MODULE_LINES} lines): {long}"


def test_no_engine_function_is_too_long():
    long = {}
    for path in _engine_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert not long, f"split these functions (> {FUNCTION_LINES} lines): {long}"


def test_the_checks_see_the_whole_engine():
    """The limits above are only as good as the files they read: every stage is there."""
    stages = {p.parent.name for p in _engine_files() if p.parent != ENGINE}
    assert {"core", "model", "sources", "evaluation", "scoring", "recovery", "search", "presets", "deploy",
            "workbench", "cli", "figures"} <= stages


# Engine modules tested through another module's test file, and why (everything else has tests/<stage>/test_<name>.py).
TESTED_ELSEWHERE = {
    "__main__.py": "cli/test_*.py run `python -m headprune`",
    "cli/__main__.py": "cli/test_*.py run `python -m headprune`",
    "model/tiny.py": "the tiny models every test builds (helpers/tiny.py); families checked in model/test_families.py",
    "model/families/bert.py": "model/test_families.py runs every check on every family",
    "model/families/distilbert.py": "model/test_families.py",
    "model/families/gpt2.py": "model/test_families.py",
    "model/families/llama.py": "model/test_families.py",
    "model/families/vit.py": "model/test_families.py",
    "recovery/lsq_fit.py": "recovery/test_lsq.py (the normal equations through lsq_recover, every family)",
    "core/outputs.py": "core/test_files.py (markers, refusals, atomic replace and its recovery after a kill)",
    "figures/_style.py": "figures/test_heads.py (colours and fonts of every figure)",
    "workbench/ops_scores.py": "workbench/test_bench.py (the Workbench is one class made of the ops_* parts)",
    "workbench/ops_masks.py": "workbench/test_bench.py",
    "workbench/ops_live.py": "workbench/test_bench.py and workbench/test_changes.py",
    "workbench/ops_deploy.py": "workbench/test_deploy.py",
    "workbench/ops_outputs.py": "workbench/test_bench.py and cli/test_trust.py",
}


def test_tests_mirror_the_engine():
    """tests/<stage>/test_<module>.py for every engine module (issue 14), or a named reason above."""
    tests = ROOT / "tests"
    missing = []
    for path in _engine_files():
        rel = path.relative_to(ENGINE)
        if path.name == "__init__.py" or str(rel) in TESTED_ELSEWHERE:
            continue
        if not (tests / rel.parent / f"test_{path.stem.lstrip('_')}.py").exists():
            missing.append(str(rel))
    assert not missing, f"add a test module for: {missing}"
    stale = [name for name in TESTED_ELSEWHERE if not (ENGINE / name).exists()]
    assert not stale, f"TESTED_ELSEWHERE names modules that are gone: {stale}"
