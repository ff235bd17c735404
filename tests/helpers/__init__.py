"""Shared test helpers, importable from every test directory (`pythonpath = ["tests"]` in pyproject.toml):
tiny tokenizers, models and workspaces on disk (`tiny`), the texts they are run on (`texts`), masks and
logits (`masks`), scoring set-ups (`scores`), and the dashboard, browser, CLI, report and ONNX checks.
Fixtures built from these live in the conftest.py files."""
