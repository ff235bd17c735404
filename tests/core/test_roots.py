"""core.roots: served mode keeps typed paths inside the data, models and exports roots."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headprune.core.errors import UserError
from headprune.core.roots import PathPolicy, is_local_address, safe_upload_name

SECRET = "PRETTY_NAME=secret server"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server's disk: roots for data, models and exports, a secret outside them, and symlinks both ways."""
    for name in ("data/sub", "models/tiny", "exports", "private", "data-evil"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "private" / "os-release.csv").write_text(SECRET + "\n")
    (tmp_path / "data" / "train.csv").write_text("text,label\nhi,1\n")
    (tmp_path / "data" / "sub" / "test.csv").write_text("text,label\nho,0\n")
    (tmp_path / "data" / "escape.csv").symlink_to(tmp_path / "private" / "os-release.csv")
    (tmp_path / "data" / "escape-dir").symlink_to(tmp_path / "private")
    (tmp_path / "data" / "inside.csv").symlink_to(tmp_path / "data" / "sub" / "test.csv")
    (tmp_path / "exports" / "escape").symlink_to(tmp_path / "private")
    monkeypatch.chdir(tmp_path / "private")
    monkeypatch.setenv("HOME", str(tmp_path / "private"))
    return tmp_path


@pytest.fixture
def served(server):
    return PathPolicy.from_env(served=True, data_root=server / "data", models_root=server / "models",
                               exports_root=server / "exports", environ={})


# ------------------------------------------------------------------------------------------ deciding served mode
@pytest.mark.parametrize("address, local", [
    ("localhost", True), ("LOCALHOST", True), ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
    ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False), ("192.168.1.20", False), ("10.0.0.1", False),
    ("myhost.example.org", False), ("localhost.example.org", False),
])
def test_only_loopback_addresses_are_local(address, local):
    assert is_local_address(address) is local


@pytest.mark.parametrize("address, setting, served", [
    ("localhost", None, False), ("0.0.0.0", None, True), (None, None, True),
    ("localhost", "1", True), ("localhost", "yes", True), ("0.0.0.0", "0", False), ("0.0.0.0", "off", False),
])
def test_served_follows_the_address_unless_the_variable_says(address, setting, served):
    environ = {} if setting is None else {"HEADPRUNE_SERVED": setting}
    assert PathPolicy.from_env(address=address, environ=environ).served is served


def test_the_command_line_is_not_served_by_default():
    assert PathPolicy.from_env(environ={}) == PathPolicy()


def test_roots_come_from_the_environment_and_arguments_win(server):
    environ = {"HEADPRUNE_SERVED": "true", "HEADPRUNE_DATA_ROOT": str(server / "data"),
               "HEADPRUNE_MODELS_ROOT": str(server / "models"), "HEADPRUNE_EXPORTS_ROOT": ""}
    policy = PathPolicy.from_env(environ=environ, exports_root=server / "exports")
    assert policy == PathPolicy(True, server / "data", server / "models", server / "exports")


@pytest.mark.parametrize("environ, option", [
    ({"HEADPRUNE_SERVED": "maybe"}, "HEADPRUNE_SERVED"),
    ({"HEADPRUNE_DATA_ROOT": "/no/such/folder"}, "HEADPRUNE_DATA_ROOT"),
    ({"HEADPRUNE_EXPORTS_ROOT": "{file}"}, "HEADPRUNE_EXPORTS_ROOT"),
])
def test_bad_settings_are_refused_with_the_variable(server, environ, option):
    environ = {k: v.replace("{file}", str(server / "data" / "train.csv")) for k, v in environ.items()}
    with pytest.raises(UserError) as refused:
        PathPolicy.from_env(environ=environ)
    assert refused.value.option == option and option in str(refused.value)


# ------------------------------------------------------------------------------------------ not served: as before
def test_not_served_allows_every_path(server):
    policy = PathPolicy()
    assert policy.readable("os-release.csv", "data") == server / "private" / "os-release.csv"
    assert policy.readable("~/os-release.csv", "data") == server / "private" / "os-release.csv"
    assert policy.readable(server / "data" / "escape.csv", "data") == server / "private" / "os-release.csv"
    assert policy.writable("/tmp/anywhere") == Path(os.path.realpath("/tmp/anywhere"))


# ------------------------------------------------------------------------------------------ served: confined
def test_served_paths_are_taken_from_their_root(served, server):
    assert served.readable("train.csv", "data") == server / "data" / "train.csv"
    assert served.readable("sub/test.csv", "data") == server / "data" / "sub" / "test.csv"
    assert served.readable(str(server / "data" / "train.csv"), "data") == server / "data" / "train.csv"
    assert served.readable("inside.csv", "data") == server / "data" / "sub" / "test.csv"  # a symlink within
    assert served.readable("tiny", "model") == server / "models" / "tiny"
    assert served.writable("class-a/model") == server / "exports" / "class-a" / "model"


@pytest.mark.parametrize("path", [
    "/etc/os-release", "{server}/private/os-release.csv", "../private/os-release.csv", "sub/../train.csv",
    "~/os-release.csv", "~root/x.csv", "escape.csv", "escape-dir/os-release.csv", "escape-dir",
    "{server}/data-evil/x.csv", "{server}/data/../private/os-release.csv", "..", "/", "a\0b.csv",
    "..\\private\\os-release.csv",
])
def test_served_refuses_escapes(served, server, path):
    path = path.replace("{server}", str(server))
    with pytest.raises(UserError) as refused:
        served.readable(path, "data")
    message = str(refused.value)
    assert message.startswith("this dashboard is served to a class: typed data paths must lie under")
    assert str(server / "data") in message and "upload the file instead" in message
    assert SECRET not in message and "PRETTY_NAME" not in message and "\n" not in message


@pytest.mark.parametrize("policy", [PathPolicy(), "served"])
@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_path_is_refused(served, policy, path):
    policy = served if policy == "served" else policy
    with pytest.raises(UserError, match="no data path given"):
        policy.readable(path, "data")
    with pytest.raises(UserError, match="no export path given"):
        policy.writable(path)


@pytest.mark.parametrize("path", ["../private/x", "escape/x", "escape", "/tmp/x", "~/x", ".", "{server}/exports"])
def test_served_writes_stay_strictly_inside_the_exports_root(served, server, path):
    with pytest.raises(UserError, match="served to a class"):
        served.writable(path.replace("{server}", str(server)))


@pytest.mark.parametrize("kind, root, advice", [
    ("data", "HEADPRUNE_DATA_ROOT", "upload the file instead"),
    ("model", "HEADPRUNE_MODELS_ROOT", "choose a preset or a Hub id instead"),
])
def test_served_without_a_root_refuses_that_kind_of_path(server, kind, root, advice):
    policy = PathPolicy(served=True)
    with pytest.raises(UserError, match=f"typed {kind} paths are turned off \\({root} is not set\\); {advice}"):
        policy.readable(server / "data" / "train.csv", kind)
    with pytest.raises(UserError, match="HEADPRUNE_EXPORTS_ROOT is not set"):
        policy.writable("model")


def test_source_passes_presets_and_hub_names_and_checks_paths(served, server):
    (server / "private" / "minilm-tweets").mkdir()
    assert served.source("minilm-tweets", "model", builtin={"minilm-tweets"}) == "minilm-tweets"
    assert served.source("tweets", "data", builtin={"tweets"}) == "tweets"
    assert served.source("  sentence-transformers/all-MiniLM-L6-v2 ", "model") == "sentence-transformers/all-MiniLM-L6-v2"
    assert served.source("tiny", "model") == str(server / "models" / "tiny")
    assert served.source("train.csv", "data") == str(server / "data" / "train.csv")
    # a Hub-shaped name that exists in the working directory is a path, and served paths start at the root
    assert served.source("minilm-tweets", "model") == str(server / "models" / "minilm-tweets")
    assert served.source("os-release.csv", "data") == str(server / "data" / "os-release.csv")
    for path in ("a/..", "../private", "/etc", "~/x"):
        with pytest.raises(UserError, match="served to a class"):
            served.source(path, "model")
    assert PathPolicy().source("os-release.csv", "data") == str(server / "private" / "os-release.csv")


_PARTS = st.sampled_from(["train.csv", "sub", "..", ".", "", "~", "escape.csv", "escape-dir", "inside.csv",
                          "data", "private", "os-release.csv", "\\", "..\\..", "a b", "~root", "/"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_PARTS, max_size=6), absolute=st.booleans(), text=st.text(max_size=12))
def test_no_typed_path_escapes_the_root(served, server, parts, absolute, text):
    path = ("/" if absolute else "") + "/".join(parts) + text
    root = server / "data"
    try:
        resolved = served.readable(path, "data")
    except UserError as exc:
        assert SECRET not in str(exc)
        return
    assert resolved == Path(os.path.realpath(resolved)) and resolved.is_relative_to(root)


# ------------------------------------------------------------------------------------------ upload names
def test_upload_names_are_short_safe_and_unique_by_content():
    name = safe_upload_name("x" * 300 + ".csv", b"a,b\n")
    assert len(name) <= 100 and name.endswith("/" + "x" * 48 + ".csv")
    assert safe_upload_name("x" * 300 + ".csv", b"a,b\n") == name != safe_upload_name("x" * 300 + ".csv", b"a,c\n")
    assert re.fullmatch(r"[0-9a-f]{16}/etc-passwd\.csv", safe_upload_name("../../etc-passwd.CSV", b""))
    assert re.fullmatch(r"[0-9a-f]{16}/data\.parquet", safe_upload_name("C:\\Users\\me\\data.parquet", b""))
    assert re.fullmatch(r"[0-9a-f]{16}/upload\.json", safe_upload_name(".json", b""))
    assert re.fullmatch(r"[0-9a-f]{16}/upload", safe_upload_name("", b""))


@given(name=st.text(max_size=400), content=st.binary(max_size=64))
def test_any_upload_name_becomes_a_plain_file_name(tmp_path_factory, name, content):
    safe = safe_upload_name(name, content)
    assert len(safe) <= 100 and re.fullmatch(r"[0-9a-f]{16}/[A-Za-z0-9_-]+(\.[a-z0-9]{1,10})?", safe)
    folder = tmp_path_factory.getbasetemp()
    (folder / safe).parent.mkdir(exist_ok=True)
    (folder / safe).write_bytes(content)  # a 300-character name no longer fails here
    assert (folder / safe).read_bytes() == content
