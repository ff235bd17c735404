"""What may be written where: output kinds with their markers, and `check_output`, called before any work.

`check_output` never allows the working directory, the home folder, their parents or the inputs; an existing
path only when it is headprune's own output of the same kind (`OutputKind`, recognised by its marker) and the
user asked to replace it.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import InternalError, OutputExistsError, UserError
from .files import atomic_write_text, recover_interrupted, resolved

_HEAD = 4096  # bytes read to find a pattern marker
_MAX_MARKER = 1 << 20  # a JSON marker larger than this is not headprune's
_COUNT_LIMIT = 1000  # entries counted when describing a foreign folder


# ------------------------------------------------------------------------------------------ kinds of output
@dataclass(frozen=True)
class OutputKind:
    """A kind of headprune output and its marker.

    `marker`: for a folder, a file inside it; for a file, "" (the file itself) or a suffix naming a sidecar
    (`model.onnx` + `.headprune.json`). The marker is a JSON object (whose "schema" is `schema`, when given)
    or, with `pattern`, a file whose first 4 KiB match that regex. `details` formats the marker's fields.
    """

    name: str
    label: str
    folder: bool
    marker: str = ""
    schema: str | None = None
    pattern: str | None = None
    details: str = ""

    def marker_path(self, path: str | os.PathLike) -> Path:
        """Where `path`'s marker lies."""
        path = Path(path)
        return path / self.marker if self.folder else path.with_name(path.name + self.marker)

    def record(self, path: Path) -> dict | None:
        """The marker's fields if `path` is this kind of headprune output, else None (reads ≤ 1 MiB)."""
        if path.is_dir() != self.folder:
            return None
        try:
            with open(self.marker_path(path), "rb") as fh:
                if self.pattern is not None:
                    return {} if re.search(self.pattern.encode(), fh.read(_HEAD)) else None
                raw = fh.read(_MAX_MARKER + 1)
            record = json.loads(raw) if len(raw) <= _MAX_MARKER else None
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or (self.schema is not None and record.get("schema") != self.schema):
            return None
        return record

    def describe(self, record: dict) -> str:
        """The output in words, e.g. 'a headprune pruned model (6×12 heads, 36 kept)'."""
        with contextlib.suppress(KeyError, IndexError, ValueError, TypeError):
            if self.details:
                return f"a headprune {self.label} ({self.details.format_map(record)})"
        return f"a headprune {self.label}"


_HEADS = "{num_layers}×{num_heads} heads, {heads_kept} kept"
PRUNED_MODEL = OutputKind("pruned-model", "pruned model", True, "headprune_pruned.json", details=_HEADS)
MASKED_MODEL = OutputKind("masked-model", "masked model", True, "headprune_mask.json", "headprune.mask/1", details=_HEADS)
CHECKPOINTS = OutputKind("checkpoints", "checkpoints folder", True, "headprune_checkpoints.json",
                         "headprune.checkpoints/1")
SCORES = OutputKind("scores", "scores file", False, schema="headprune/scores-v1",
                    details="{metric}, {num_layers}×{num_heads} heads")
MASK = OutputKind("mask", "mask", False, schema="headprune.mask/1", details=_HEADS)
REPORT = OutputKind("report", "report", False, pattern=r'<meta\s+name="generator"\s+content="headprune\b')
ONNX = OutputKind("onnx", "ONNX export", False, ".headprune.json", "headprune.onnx/1")
KINDS: dict[str, OutputKind] = {k.name: k for k in (PRUNED_MODEL, MASKED_MODEL, CHECKPOINTS, SCORES, MASK, REPORT, ONNX)}


def mark_output(path: str | os.PathLike, kind: OutputKind | str, record: dict | None = None) -> Path:
    """Write `kind`'s marker for `path` (creating a folder kind's folder); returns the marker's path.

    For the kinds whose marker headprune defines here: a checkpoints folder when it is created, an ONNX sidecar.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if kind.pattern is not None or not kind.marker or kind.schema is None:
        raise InternalError(f"a {kind.label} is marked by what its writer puts in it, not by mark_output")
    if kind.folder:
        Path(path).mkdir(parents=True, exist_ok=True)
    return atomic_write_text(kind.marker_path(path), json.dumps({**(record or {}), "schema": kind.schema}, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ check_output
def _size(n: int) -> str:
    """1234567 -> "1.2 MB"."""
    value, units = float(n), ["bytes", "kB", "MB", "GB", "TB"]
    while value >= 1000 and len(units) > 1:
        value, units = value / 1000, units[1:]
    return f"{n} bytes" if units[0] == "bytes" else f"{value:.1f} {units[0]}"


def _what_is(path: Path) -> str:
    """What lies at `path`, in words: a kind of headprune output, or a foreign folder or file."""
    for kind in KINDS.values():
        record = kind.record(path)
        if record is not None:
            return kind.describe(record)
    if path.is_dir():
        with os.scandir(path) as entries:
            n = sum(1 for _ in itertools.islice(entries, _COUNT_LIMIT + 1))
        count = f"more than {_COUNT_LIMIT} entries" if n > _COUNT_LIMIT else f"{n} entr{'y' if n == 1 else 'ies'}"
        return f"a folder with {count} that headprune did not write"
    return f"a {_size(path.stat().st_size)} file that headprune did not write"


def _never(path: Path, protect: Iterable) -> str | None:
    """Why `path` may never be written, even when asked, or None."""
    cwd = resolved(os.getcwd())
    if path == cwd or path in cwd.parents:
        return "the working directory" if path == cwd else "a parent of the working directory"
    with contextlib.suppress(RuntimeError, KeyError):  # no home folder known
        home = resolved(Path.home())
        if path == home or path in home.parents:
            return "the home folder" if path == home else "a parent of the home folder"
    for item in protect:
        if item is None or str(item) == "":
            continue
        kept = resolved(os.path.expanduser(item))
        if path == kept or path in kept.parents:
            return f"the input {kept}" if path == kept else f"a folder holding the input {kept}"
    return None


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _check_parent(path: Path, option: str) -> None:
    """The folder that will hold `path` exists or can be made, and can be written."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot create {path}: {folder} is a file; choose another path", option=option)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write in {folder} (permission denied); choose another path", option=option)


def check_output(path: str | os.PathLike, kind: OutputKind | str, *, overwrite: bool = False,
                 protect: Iterable[str | os.PathLike | None] = (), option: str = "out") -> Path:
    """The resolved path where a `kind` output may be written, or `UserError` / `OutputExistsError` saying why not.

    A missing path is fine (its folder must be makeable and writable), and so is an empty folder for a folder
    kind; an existing one only when it is headprune's own output of this kind and `overwrite` is set. Never:
    the working directory, the home folder, their parents, a `protect` path (source model, data, mask) or a
    folder holding one. Symlinks are resolved first; `option` names the engine argument in the error.
    """
    kind = KINDS[kind] if isinstance(kind, str) else kind
    if path is None or not str(path).strip():
        raise UserError(f"no path given for the {kind.label}", option=option)
    target = resolved(os.path.expanduser(path))
    recover_interrupted(target)
    reason = _never(target, protect)
    if reason is not None:
        raise OutputExistsError(f"refusing to write the {kind.label} to {target}: it is {reason}, which headprune "
                                "never replaces; choose another path", option=option)
    if not target.exists():
        _check_parent(target, option)
        return target
    if target.is_dir() != kind.folder:
        raise OutputExistsError(f"{target} is {_what_is(target)}, but a {kind.label} is a "
                                f"{'folder' if kind.folder else 'file'}; choose another path", option=option)
    record = kind.record(target)
    if record is None:
        if kind.folder and _is_empty(target):  # nothing to lose
            _check_parent(target, option)
            return target
        raise OutputExistsError(f"{target} already exists and is {_what_is(target)}; headprune only replaces its "
                                f"own {kind.label}s, so choose another path", option=option)
    if not overwrite:
        raise OutputExistsError(f"{target} already exists and is {kind.describe(record)}; choose another path, "
                                "or pass overwrite to replace it", option=option)
    _check_parent(target, option)
    return target
