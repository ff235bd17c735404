"""core.files: atomic writes, umask, crash-safe folder replaces, leftovers, output kinds and check_output."""
from __future__ import annotations

import ctypes
import errno
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from headprune.core import files
from headprune.core.errors import InternalError, OutputExistsError, UserError
from headprune.core.files import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    recover_interrupted,
)
from headprune.core.outputs import (
    CHECKPOINTS,
    KINDS,
    MASK,
    ONNX,
    PRUNED_MODEL,
    SCORES,
    check_output,
    mark_output,
)

KILLED, DONE, FAILED = 71, 72, 73


# ------------------------------------------------------------------------------------------ helpers
def write_version(path: Path, version: str) -> None:
    """A folder output the way callers write one: files through atomic_write_text inside atomic_directory."""
    with atomic_directory(path) as tmp:
        atomic_write_text(tmp / "a.txt", version)
        atomic_write_text(tmp / "b.txt", version * 1000)


def version_of(path: Path) -> str | None:
    """The complete version at `path` (None if missing); fails on a half-written or mixed folder."""
    if not path.exists():
        return None
    assert sorted(os.listdir(path)) == ["a.txt", "b.txt"], os.listdir(path)
    version = (path / "a.txt").read_text()
    assert (path / "b.txt").read_text() == version * 1000
    return version


def others(folder: Path, *keep: str) -> list[str]:
    return sorted(set(os.listdir(folder)) - set(keep))


def killed_at(step: int, action) -> bool:
    """Run `action` in a forked child that dies (no cleanup, no handlers) just before its `step`-th file-system
    operation (mkdir, rename, replace, unlink, rmtree, exchange); True if it died, False if it finished."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            counter = itertools.count()

            def dying(fn):
                def wrapper(*args, **kwargs):
                    if next(counter) == step:
                        os._exit(KILLED)
                    return fn(*args, **kwargs)
                return wrapper

            for name in ("mkdir", "rename", "replace", "unlink"):
                setattr(os, name, dying(getattr(os, name)))
            shutil.rmtree = dying(shutil.rmtree)
            files._exchange = dying(files._exchange)
            action()
            os._exit(DONE)
        except BaseException:
            os._exit(FAILED)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (KILLED, DONE), f"the child failed at step {step}"
    return code == KILLED


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def exchange_works(folder: Path) -> bool:
    (folder / "probe-a").mkdir()
    (folder / "probe-b").mkdir()
    works = files._exchange(folder / "probe-a", folder / "probe-b")
    shutil.rmtree(folder / "probe-a")
    shutil.rmtree(folder / "probe-b")
    return works


@pytest.fixture(params=["exchange", "journal"])
def replace_mode(request, tmp_path, monkeypatch):
    """Run a test with the atomic swap, and again with the journal fallback forced."""
    if request.param == "exchange" and not exchange_works(tmp_path):
        pytest.skip("this filesystem cannot swap folders (RENAME_EXCHANGE)")
    if request.param == "journal":
        monkeypatch.setattr(files, "_RENAMEAT2", None)
    return request.param


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def make(kind, path: Path) -> None:
    """A genuine headprune output of `kind` at `path`, made from the kind's own description."""
    record = {"schema": kind.schema, "num_layers": 6, "num_heads": 12, "heads_kept": 36, "metric": "gradient"}
    if kind.folder:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"weights")
    elif kind.marker:
        path.write_bytes(b"\x08\x07onnx bytes")
    if kind.pattern is not None:
        path.write_text('<!doctype html>\n<html><head><meta name="generator" content="headprune 0.1.0"></head></html>\n')
    else:
        kind.marker_path(path).write_text(json.dumps(record))


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_a_file_and_returns_the_path(tmp_path):
    target = tmp_path / "deep" / "scores.json"
    assert atomic_write_text(target, "one") == target
    assert atomic_write_bytes(target, b"two") == target
    assert target.read_bytes() == b"two"
    assert others(target.parent, "scores.json") == []


def test_atomic_write_goes_through_a_symlink_to_its_target(tmp_path):
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    atomic_write_text(tmp_path / "link.json", "new")
    assert (tmp_path / "link.json").is_symlink() and (tmp_path / "real.json").read_text() == "new"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077], indirect=True)
def test_created_files_and_folders_honour_the_umask(tmp_path, umask, replace_mode):
    file_mode, folder_mode = 0o666 & ~umask, 0o777 & ~umask
    atomic_write_text(tmp_path / "made" / "mask.json", "{}")
    assert (tmp_path / "made").stat().st_mode & 0o777 == folder_mode
    assert (tmp_path / "made" / "mask.json").stat().st_mode & 0o777 == file_mode
    for version in ("old", "new"):  # a new folder, then a replaced one
        write_version(tmp_path / "model", version)
        assert (tmp_path / "model").stat().st_mode & 0o777 == folder_mode
        assert (tmp_path / "model" / "a.txt").stat().st_mode & 0o777 == file_mode
    mark_output(tmp_path / "ckpt", CHECKPOINTS)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == folder_mode
    assert CHECKPOINTS.marker_path(tmp_path / "ckpt").stat().st_mode & 0o777 == file_mode


def test_umask_is_honoured_in_a_fresh_process(tmp_path):
    """The same with the umask set by the shell that starts Python, as a user's would be."""
    import subprocess
    import sys

    code = ("import sys; from headprune.core.files import atomic_write_text, atomic_directory\n"
            "atomic_write_text(sys.argv[1] + '/f.json', '{}')\n"
            "with atomic_directory(sys.argv[1] + '/d') as t: pass\n")
    subprocess.run(["sh", "-c", 'umask 027 && exec "$0" -c "$1" "$2"', sys.executable, code, str(tmp_path)],
                   check=True, env={**os.environ, "PYTHONPATH": str(Path(files.__file__).parents[2])})
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


def test_a_failed_write_leaves_the_old_folder_and_no_leftovers(tmp_path, replace_mode):
    write_version(tmp_path / "out", "old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "out") as tmp:
            atomic_write_text(tmp / "a.txt", "new")
            raise KeyboardInterrupt
    assert version_of(tmp_path / "out") == "old"
    assert others(tmp_path, "out") == []


def test_replace_without_overwrite_or_over_a_file_is_refused(tmp_path):
    write_version(tmp_path / "out", "old")
    with pytest.raises(OutputExistsError, match="already exists"):
        with atomic_directory(tmp_path / "out", overwrite=False):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        with atomic_directory(tmp_path / "file"):
            pass
    assert version_of(tmp_path / "out") == "old" and others(tmp_path, "out", "file") == []


def test_replace_swaps_in_one_step_where_the_filesystem_can(tmp_path, monkeypatch):
    if not exchange_works(tmp_path):
        pytest.skip("this filesystem cannot swap folders (RENAME_EXCHANGE)")
    write_version(tmp_path / "out", "old")

    def no_journal(new, target):
        raise AssertionError("the journal is only a fallback")

    monkeypatch.setattr(files, "_replace_journalled", no_journal)
    write_version(tmp_path / "out", "new")
    assert version_of(tmp_path / "out") == "new" and others(tmp_path, "out") == []


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EOPNOTSUPP, None])
def test_replace_falls_back_to_the_journal(tmp_path, monkeypatch, refusal):
    """No renameat2 (None), or a filesystem that refuses the swap: the journalled replace does the job."""
    def refusing(*args):
        ctypes.set_errno(refusal)
        return -1

    monkeypatch.setattr(files, "_RENAMEAT2", None if refusal is None else refusing)
    journalled = []
    real = files._replace_journalled
    monkeypatch.setattr(files, "_replace_journalled", lambda new, target: (journalled.append(1), real(new, target)))
    write_version(tmp_path / "out", "old")
    write_version(tmp_path / "out", "new")
    assert journalled == [1]
    assert version_of(tmp_path / "out") == "new" and others(tmp_path, "out") == []


def test_a_swap_that_fails_otherwise_keeps_the_old_folder(tmp_path, monkeypatch):
    def failing(*args):
        ctypes.set_errno(errno.EACCES)
        return -1

    write_version(tmp_path / "out", "old")
    monkeypatch.setattr(files, "_RENAMEAT2", failing)
    with pytest.raises(PermissionError):
        write_version(tmp_path / "out", "new")
    assert version_of(tmp_path / "out") == "old" and others(tmp_path, "out") == []


def test_ctrl_c_between_the_two_renames_finishes_the_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_RENAMEAT2", None)
    write_version(tmp_path / "out", "old")
    real, calls = os.rename, itertools.count()

    def interrupted(src, dst):
        if next(calls) == 1:  # after `out` went to the old name, before the new folder came in
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_version(tmp_path / "out", "new")
    assert version_of(tmp_path / "out") == "new" and others(tmp_path, "out") == []


# ------------------------------------------------------------------------------------------ killed writers
def test_a_file_write_killed_at_any_step_leaves_old_or_new(tmp_path):
    target = tmp_path / "scores.json"
    atomic_write_text(target, "old" * 1000)
    for step in itertools.count():
        killed = killed_at(step, lambda: atomic_write_text(target, "new" * 1000))
        assert target.read_text() in ("old" * 1000, "new" * 1000)
        recover_interrupted(target)
        assert others(tmp_path, "scores.json") == []
        if not killed:
            break
    assert target.read_text() == "new" * 1000 and step >= 1


def test_a_replace_killed_at_any_step_leaves_old_or_new(tmp_path, replace_mode):
    """Kill the writer before each of its file operations: the folder is always old or new once recovered,
    never neither and never a mix, and everything the dead writer left is tidied away."""
    out = tmp_path / "out"
    seen = set()
    for step in itertools.count():
        write_version(out, "old")
        killed = killed_at(step, lambda: write_version(out, "new"))
        state = version_of(out)
        if state is None:  # only between the journalled renames, and then the journal says how to finish
            assert replace_mode == "journal" and files._journal(out).exists()
        recover_interrupted(out)
        seen.add((state, version_of(out)))
        assert version_of(out) in ("old", "new")
        assert others(tmp_path, "out") == []
        if not killed:
            break
    assert version_of(out) == "new"
    assert ("old", "old") in seen and ("new", "new") in seen
    if replace_mode == "journal":
        assert (None, "new") in seen
    assert step >= (8 if replace_mode == "journal" else 6)


def test_a_recovery_killed_at_any_step_is_finished_by_the_next(tmp_path, monkeypatch):
    """Recovery is idempotent: kill the writer mid-replace, then kill the recovery at each of its steps."""
    monkeypatch.setattr(files, "_RENAMEAT2", None)
    out = tmp_path / "out"
    recoveries = 0
    for write_step in itertools.count():
        write_version(out, "old")
        if not killed_at(write_step, lambda: write_version(out, "new")):
            break
        if not files._journal(out).exists():
            recover_interrupted(out)
            continue
        for recover_step in itertools.count():
            if recover_step:  # the same interrupted replace again
                write_version(out, "old")
                assert killed_at(write_step, lambda: write_version(out, "new"))
            killed = killed_at(recover_step, lambda: recover_interrupted(out))
            recover_interrupted(out)
            recoveries += 1
            assert version_of(out) == "new" and others(tmp_path, "out") == []
            if not killed:
                break
    assert recoveries >= 6


def test_leftovers_are_removed_only_when_their_writer_is_gone(tmp_path):
    me, start = os.getpid(), files._start_time(os.getpid())
    dead = dead_pid()
    names = {
        f".out.headprune-partial-{dead}-{start}-ab12": False,  # a killed writer: removed
        f".out.headprune-old-{me}-{int(start) + 1}-cd34": False,  # same pid, other process (a container restart)
        f".out.headprune-partial-{me}-{start}-ef56": True,  # this process, maybe another thread: kept
        f".other.headprune-partial-{dead}-{start}-aa11": True,  # another output's
        ".out.something-else": True,
    }
    for i, name in enumerate(names):
        if i % 2:
            (tmp_path / name).mkdir()
            (tmp_path / name / "weights").write_bytes(b"x")
        else:
            (tmp_path / name).write_bytes(b"x")
    atomic_write_text(tmp_path / "out", "new")
    assert others(tmp_path, "out") == sorted(name for name, kept in names.items() if kept)


def test_a_journal_of_a_running_writer_is_left_alone(tmp_path):
    out = tmp_path / "out"
    write_version(out, "old")
    me, start = os.getpid(), files._start_time(os.getpid())
    new, old = f".out.headprune-partial-{me}-{start}-ab12", f".out.headprune-old-{me}-{start}-cd34"
    shutil.copytree(out, tmp_path / new)
    record = {"pid": me, "start": start, "new": new, "old": old}
    files._journal(out).write_text(json.dumps(record))
    recover_interrupted(out)
    assert (tmp_path / new).exists() and files._journal(out).exists()
    files._journal(out).write_text(json.dumps({**record, "pid": dead_pid()}))
    recover_interrupted(out)
    assert others(tmp_path, "out") == []


@pytest.mark.parametrize("record", ['{"pid": 1, "new": "../../etc", "old": "x"}', "not json", "[]"])
def test_a_journal_headprune_did_not_write_is_refused(tmp_path, record):
    files._journal(tmp_path / "out").write_text(record)
    with pytest.raises(UserError, match="not a journal headprune wrote"):
        write_version(tmp_path / "out", "new")


def test_long_names_keep_their_temp_names_short(tmp_path, replace_mode):
    out = tmp_path / ("m" * 250)
    write_version(out, "old")
    assert killed_at(2, lambda: write_version(out, "new"))
    write_version(out, "new")
    assert version_of(out) == "new" and others(tmp_path, out.name) == []


# ------------------------------------------------------------------------------------------ output kinds
@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS)
def test_each_kind_is_recognised_and_replaced_only_when_asked(tmp_path, kind):
    target = tmp_path / "output"
    make(kind, target)
    with pytest.raises(OutputExistsError, match=f"is a headprune {kind.label}.*pass overwrite") as refused:
        check_output(target, kind, option="mask_out")
    assert refused.value.option == "mask_out" and "\n" not in str(refused.value)
    assert check_output(target, kind.name, overwrite=True) == target


@pytest.mark.parametrize("have, want", [(a, b) for a in KINDS.values() for b in KINDS.values() if a != b],
                         ids=[f"{a}-as-{b}" for a in KINDS for b in KINDS if a != b])
def test_another_kind_is_never_replaced(tmp_path, have, want):
    make(have, tmp_path / "output")
    with pytest.raises(OutputExistsError, match=f"is a headprune {have.label}"):
        check_output(tmp_path / "output", want, overwrite=True)


def test_descriptions_say_what_is_there(tmp_path):
    make(PRUNED_MODEL, tmp_path / "model")
    make(SCORES, tmp_path / "scores.json")
    with pytest.raises(OutputExistsError, match=r"a headprune pruned model \(6×12 heads, 36 kept\)"):
        check_output(tmp_path / "model", PRUNED_MODEL)
    with pytest.raises(OutputExistsError, match=r"a headprune scores file \(gradient, 6×12 heads\)"):
        check_output(tmp_path / "scores.json", SCORES)
    (tmp_path / "model" / "headprune_pruned.json").write_text("{}")  # fields missing: still named
    with pytest.raises(OutputExistsError, match=r"is a headprune pruned model;"):
        check_output(tmp_path / "model", PRUNED_MODEL)


def test_foreign_folders_and_files_are_never_replaced(tmp_path):
    (tmp_path / "photos").mkdir()
    for i in range(12):
        (tmp_path / "photos" / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "notes.json").write_text('{"schema": "someone-else/1"}' + " " * 2000)
    with pytest.raises(OutputExistsError, match="a folder with 12 entries that headprune did not write"):
        check_output(tmp_path / "photos", PRUNED_MODEL, overwrite=True)
    with pytest.raises(OutputExistsError, match=r"a 2.0 kB file that headprune did not write"):
        check_output(tmp_path / "notes.json", MASK, overwrite=True)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"schema": "headprune.mask/1", "pad": "x" * (1 << 20)}))
    with pytest.raises(OutputExistsError, match="did not write"):  # far larger than any mask headprune writes
        check_output(big, MASK, overwrite=True)


def test_a_huge_foreign_folder_is_described_cheaply(tmp_path):
    (tmp_path / "many").mkdir()
    for i in range(3000):
        (tmp_path / "many" / str(i)).mkdir()
    began = time.perf_counter()
    with pytest.raises(OutputExistsError, match="more than 1000 entries"):
        check_output(tmp_path / "many", CHECKPOINTS, overwrite=True)
    assert time.perf_counter() - began < 1


def test_a_file_where_a_folder_belongs_and_the_reverse(tmp_path):
    make(MASK, tmp_path / "mask.json")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputExistsError, match="is a headprune mask.*but a pruned model is a folder"):
        check_output(tmp_path / "mask.json", PRUNED_MODEL, overwrite=True)
    with pytest.raises(OutputExistsError, match="but a scores file is a file"):
        check_output(tmp_path / "folder", SCORES, overwrite=True)


def test_missing_paths_and_empty_folders_are_fine(tmp_path):
    assert check_output(tmp_path / "a" / "b" / "model", PRUNED_MODEL) == tmp_path / "a" / "b" / "model"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", CHECKPOINTS) == tmp_path / "empty"
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(OutputExistsError, match="a 0 bytes file that headprune did not write"):
        check_output(tmp_path / "empty.json", SCORES, overwrite=True)


def test_a_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "data.csv").write_text("text,label\n")
    with pytest.raises(UserError, match="data.csv is a file") as refused:
        check_output(tmp_path / "data.csv" / "out" / "model", PRUNED_MODEL, option="out")
    assert not isinstance(refused.value, OutputExistsError) and refused.value.option == "out"


def test_a_parent_that_cannot_be_written_is_refused(tmp_path):
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o555)
        if os.geteuid() != 0:
            with pytest.raises(UserError, match="permission denied"):
                check_output(folder / "sub" / "model", PRUNED_MODEL)
            return
        pid = os.fork()  # root may write anywhere: ask as nobody instead
        if pid == 0:
            try:
                os.setuid(65534)
                check_output(folder / "sub" / "model", PRUNED_MODEL)
                os._exit(1)
            except UserError as exc:
                os._exit(0 if "permission denied" in str(exc) else 2)
            except BaseException:
                os._exit(3)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        shutil.rmtree(folder)


# ------------------------------------------------------------------------------------------ never, even when asked
@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """users/home/ (HOME)  users/home/src-model/  work/ (the working directory)  work/data/train.csv  work/mask.json"""
    home = tmp_path / "users" / "home"
    work = tmp_path / "work"
    home.parent.mkdir()
    for folder in (home, home / "src-model", work, work / "data"):  # all look replaceable: only the rules refuse
        make(PRUNED_MODEL, folder)
    (work / "data" / "train.csv").write_text("text,label\n")
    make(MASK, work / "mask.json")
    (work / "link-to-cwd").symlink_to(work)
    (work / "link-to-data").symlink_to(work / "data")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return tmp_path


@pytest.mark.parametrize("path, why", [
    (".", "the working directory"),
    ("..", "a parent of the working directory"),
    ("/", "a parent of the working directory"),
    ("~", "the home folder"),
    ("~/..", "a parent of the home folder"),
    ("data/train.csv", "the input .*train.csv"),
    ("data", "a folder holding the input .*train.csv"),
    ("~/src-model", "the input .*src-model"),
    ("mask.json", "the input .*mask.json"),
    ("link-to-cwd", "the working directory"),
    ("link-to-data", "a folder holding the input .*train.csv"),
    ("link-to-data/train.csv", "the input .*train.csv"),
    ("data/../../work", "the working directory"),
])
def test_never_even_when_asked(workspace, path, why):
    kind = MASK if path.endswith((".json", ".csv")) else PRUNED_MODEL
    protect = ["data/train.csv", None, "~/src-model", "", "mask.json"]
    with pytest.raises(OutputExistsError, match=f"it is {why}, which headprune never replaces"):
        check_output(path, kind, overwrite=True, protect=protect)


@pytest.mark.parametrize("path", ["", "  ", None])
def test_no_path_is_refused(path):
    with pytest.raises(UserError, match="no path given for the pruned model"):
        check_output(path, PRUNED_MODEL, overwrite=True)


def test_protected_inputs_are_compared_after_resolving_symlinks(workspace):
    (workspace / "alias.csv").symlink_to(workspace / "work" / "data" / "train.csv")
    with pytest.raises(OutputExistsError, match="a folder holding the input"):
        check_output(workspace / "work" / "data", PRUNED_MODEL, overwrite=True, protect=[workspace / "alias.csv"])
    assert check_output(workspace / "work" / "out", PRUNED_MODEL, protect=[workspace / "alias.csv"])


def test_a_symlink_is_judged_by_what_it_points_at(workspace):
    target = workspace / "exports" / "model"
    target.parent.mkdir()
    make(PRUNED_MODEL, target)
    (workspace / "work" / "latest").symlink_to(target)
    with pytest.raises(OutputExistsError, match="is a headprune pruned model"):
        check_output("latest", PRUNED_MODEL)
    assert check_output("latest", PRUNED_MODEL, overwrite=True) == target
    (workspace / "work" / "dangling").symlink_to(workspace / "exports" / "new")
    assert check_output("dangling", PRUNED_MODEL) == workspace / "exports" / "new"


def test_check_finishes_an_interrupted_replace_first(tmp_path):
    out = tmp_path / "out"
    make(PRUNED_MODEL, out)
    new = f".out.headprune-partial-{dead_pid()}-1-ab12"
    out.rename(tmp_path / new)  # the writer died after moving the old folder away and before moving the new in
    files._journal(out).write_text(json.dumps({"pid": dead_pid(), "start": "1", "new": new,
                                               "old": ".out.headprune-old-1-1-cd34"}))
    with pytest.raises(OutputExistsError, match="is a headprune pruned model"):
        check_output(out, PRUNED_MODEL)
    assert others(tmp_path, "out") == []


def test_mark_output_writes_the_kinds_headprune_marks_itself(tmp_path):
    marker = mark_output(tmp_path / "runs" / "ckpt", "checkpoints")
    assert json.loads(marker.read_text())["schema"] == "headprune.checkpoints/1"
    assert CHECKPOINTS.record(tmp_path / "runs" / "ckpt") is not None
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    mark_output(tmp_path / "model.onnx", ONNX, {"heads_kept": 36})
    assert ONNX.record(tmp_path / "model.onnx") == {"heads_kept": 36, "schema": "headprune.onnx/1"}
    with pytest.raises(InternalError):
        mark_output(tmp_path / "m", PRUNED_MODEL)
