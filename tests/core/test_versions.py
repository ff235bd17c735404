"""core.versions: the version record of artifacts and caches, and the package version's one definition."""
from __future__ import annotations

import platform
from pathlib import Path

import tomllib
import torch
import transformers

import headprune
from headprune.core.versions import __version__, library_versions

ROOT = Path(__file__).resolve().parents[2]


def test_library_versions_names_the_running_libraries():
    versions = library_versions()
    assert versions == {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "headprune": __version__}


def test_extra_versions_are_added_and_the_argument_is_left_alone():
    extra = {"onnxruntime": "1.2.3"}
    versions = library_versions(extra)
    assert versions["onnxruntime"] == "1.2.3" and versions["torch"] == torch.__version__ and len(versions) == 5
    assert extra == {"onnxruntime": "1.2.3"}
    assert library_versions(None) == library_versions({})


def test_the_package_version_is_the_one_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert __version__ == project["version"] == headprune.__version__
