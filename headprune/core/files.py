"""Safe outputs: atomic writes, folder replaces with no moment where neither version exists, and `check_output`.

* `atomic_write_bytes` / `atomic_write_text` / `atomic_directory` write beside the target under a temp name
  `.NAME.headprune-partial-<pid>-<start>-<rand>` and move it into place in one step. Files and folders are made
  with modes 0o666 / 0o777 and the kernel applies the umask (and default ACLs): nothing is 0600 by accident.
* A folder is replaced by swapping it with the finished new one (Linux `renameat2(RENAME_EXCHANGE)`); where the
  system or filesystem cannot swap, a journal `.NAME.headprune-replace.json` records the replace first, so
  `recover_interrupted` (run at the start of every write and check) finishes a replace that a killed writer left.
* Leftovers of writers that no longer run (their pid and process start time) are removed by the next write.
* `check_output` decides, before any work starts, whether a path may be written: never over the working
  directory, the home folder, their parents or the inputs; over an existing path only when it is headprune's
  own output of the same kind (`OutputKind`, recognised by its marker) and the user asked to replace it.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import InternalError, OutputExistsError, UserError

_MAX_STEM = 150  # bytes of a name kept in temp names; NAME_MAX is 255
_HEAD = 4096  # bytes read to find a pattern marker
_MAX_MARKER = 1 << 20  # a JSON marker larger than this is not headprune's
_COUNT_LIMIT = 1000  # entries counted when describing a foreign folder


# ------------------------------------------------------------------------------------------ names and writers
def _stem(name: str) -> str:
    """`name`, or for a long one a prefix plus a hash, so that names built from it stay within NAME_MAX."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= _MAX_STEM:
        return name
    return raw[:100].decode("utf-8", "ignore") + "~" + hashlib.sha256(raw).hexdigest()[:12]


def _start_time(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot; "0" where unknown); None if it does not run."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except FileNotFoundError:
            return None
        except PermissionError:  # /proc mounted with hidepid: it runs, start unknown
            return "0"
        return None if fields[0] == b"Z" else fields[19].decode()
    if os.name == "nt":  # os.kill would end the process there: assume it runs
        return "0"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "0"


def _running(pid: int, start: str) -> bool:
    """Whether the writer (pid, start time) still runs; a reused pid with another start time does not count."""
    now = _start_time(pid)
    return now is not None and (now == start or "0" in (now, start))


def _temp_name(path: Path, role: str) -> Path:
    """A fresh name beside `path` for this process: `.NAME.headprune-<role>-<pid>-<start>-<rand>`."""
    pid = os.getpid()
    return path.parent / f".{_stem(path.name)}.headprune-{role}-{pid}-{_start_time(pid) or 0}-{secrets.token_hex(4)}"


def temp_sibling(path: str | os.PathLike) -> Path:
    """A fresh temp name beside `path` for this process, cleaned by `recover_interrupted` once the process
    that made it has ended (for writers that stage several files, e.g. an ONNX model and its sidecar)."""
    return _temp_name(_target(path), "partial")


def _leftover(path: Path) -> re.Pattern:
    """Matches the temp names of `path`; groups: pid, start time."""
    return re.compile(rf"\.{re.escape(_stem(path.name))}\.headprune-(?:partial|old)-(\d+)-(\d+)-[0-9a-f]+")


def _journal(path: Path) -> Path:
    return path.parent / f".{_stem(path.name)}.headprune-replace.json"


def _target(path: str | os.PathLike) -> Path:
    """`path` with every symlink resolved: writes go to what the checks looked at."""
    return Path(os.path.realpath(path))


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree; already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _sync_dir(folder: Path) -> None:
    """Make the renames in `folder` durable, where the system can fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _put(data: bytes, target: Path, tmp: Path) -> None:
    """Write `data` durably to the new file `tmp`, then rename it to `target`; `tmp` is removed on failure."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temp file beside it and one atomic rename; returns `path`."""
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(target)
    _put(data, target, _temp_name(target, "partial"))
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; when the block succeeds it takes `path`'s place in one step.

    On an exception (Ctrl-C included) the new folder is removed and `path` is left as it was. A writer killed
    at any moment leaves the old or the new version (or a journal from which the next write finishes it).
    """
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; choose another path")
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} already exists; choose another path, or pass overwrite to replace it")
    new = _temp_name(target, "partial")
    os.mkdir(new)
    try:
        yield new
    except BaseException:
        _remove(new)
        raise
    _commit_directory(new, target)


# ------------------------------------------------------------------------------------------ replacing a folder
def _load_renameat2():
    """glibc's renameat2, or None (not Linux, or a libc without it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names `a` and `b` in one atomic step; False where the system or filesystem cannot."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), str(b))


def _commit_directory(new: Path, target: Path) -> None:
    """Put the finished folder `new` in `target`'s place: a rename, a swap, or a journalled replace."""
    try:
        if not os.path.lexists(target):
            os.rename(new, target)
            swapped = None
        else:
            swapped = _exchange(new, target)
    except BaseException:
        _remove(new)
        raise
    if swapped is False:
        _replace_journalled(new, target)
    elif swapped:
        _remove(new)  # it holds the old version now
    _sync_dir(target.parent)


def _replace_journalled(new: Path, target: Path) -> None:
    """Replace `target` by `new` with two renames, recorded first in a journal so a killed replace is finished."""
    old = _temp_name(target, "old")
    pid = os.getpid()
    record = {"schema": "headprune.replace/1", "path": target.name, "new": new.name, "old": old.name,
              "pid": pid, "start": _start_time(pid) or "0"}
    try:
        _put(json.dumps(record).encode() + b"\n", _journal(target), _temp_name(target, "partial"))
    except BaseException:
        _remove(new)
        raise
    try:
        os.rename(target, old)
        os.rename(new, target)
    finally:  # done, or interrupted: either way finish what the journal says
        _complete(target, record)


def _complete(target: Path, record: dict) -> None:
    """Finish the journalled replace `record` of `target` (idempotent; tolerates a concurrent finisher)."""
    new, old = target.parent / record["new"], target.parent / record["old"]
    with contextlib.suppress(FileNotFoundError):
        if os.path.lexists(new):
            if os.path.lexists(target) and not os.path.lexists(old):
                os.rename(target, old)
            os.rename(new, target)
        elif not os.path.lexists(target) and os.path.lexists(old):
            os.rename(old, target)  # the new copy is gone: put the old one back
    _sync_dir(target.parent)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_journal(target))
    _remove(old)


def recover_interrupted(path: str | os.PathLike) -> None:
    """Finish a replace of `path` that a killed writer left half done; remove leftovers of writers now gone."""
    target = _target(path)
    journal, pattern = _journal(target), _leftover(target)
    try:
        record = json.loads(journal.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        record = None
    except ValueError:
        record = {}
    if record is not None:
        if not (isinstance(record, dict) and isinstance(record.get("pid"), int)
                and all(isinstance(record.get(k), str) and pattern.fullmatch(record[k]) for k in ("new", "old"))):
            raise UserError(f"{journal} is not a journal headprune wrote; remove it and try again")
        if not _running(record["pid"], str(record.get("start", "0"))):
            _complete(target, record)
    stale: list[str] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        with os.scandir(target.parent) as entries:
            stale = [e.name for e in entries if (m := pattern.fullmatch(e.name)) and not _running(int(m[1]), m[2])]
    for name in stale:
        _remove(target.parent / name)


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
    cwd = _target(os.getcwd())
    if path == cwd or path in cwd.parents:
        return "the working directory" if path == cwd else "a parent of the working directory"
    with contextlib.suppress(RuntimeError, KeyError):  # no home folder known
        home = _target(Path.home())
        if path == home or path in home.parents:
            return "the home folder" if path == home else "a parent of the home folder"
    for item in protect:
        if item is None or str(item) == "":
            continue
        kept = _target(os.path.expanduser(item))
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
    target = _target(os.path.expanduser(path))
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
