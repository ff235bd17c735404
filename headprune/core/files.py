"""Atomic writes: files and folders appear complete or not at all, and a folder replace has no moment where
neither version exists.

* `atomic_write_bytes` / `atomic_write_text` / `atomic_directory` write beside the target under a temp name
  `.NAME.headprune-partial-<pid>-<start>-<rand>` and move it into place in one step. Files and folders are made
  with modes 0o666 / 0o777 and the kernel applies the umask (and default ACLs): nothing is 0600 by accident.
* A folder is replaced by swapping it with the finished new one (Linux `renameat2(RENAME_EXCHANGE)`); where the
  system or filesystem cannot swap, a journal `.NAME.headprune-replace.json` records the replace first, so
  `recover_interrupted` (run at the start of every write and check) finishes a replace that a killed writer left.
* Leftovers of writers that no longer run (their pid and process start time) are removed by the next write.
What may be written where is decided before any work by `headprune.core.outputs.check_output`.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError, UserError

_MAX_STEM = 150  # bytes of a name kept in temp names; NAME_MAX is 255


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
    return _temp_name(resolved(path), "partial")


def _leftover(path: Path) -> re.Pattern:
    """Matches the temp names of `path`; groups: pid, start time."""
    return re.compile(rf"\.{re.escape(_stem(path.name))}\.headprune-(?:partial|old)-(\d+)-(\d+)-[0-9a-f]+")


def _journal(path: Path) -> Path:
    return path.parent / f".{_stem(path.name)}.headprune-replace.json"


def resolved(path: str | os.PathLike) -> Path:
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
    target = resolved(path)
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
    target = resolved(path)
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
    target = resolved(path)
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
