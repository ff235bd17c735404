"""Served mode: when the dashboard is served to a class, typed paths stay inside configured roots.

A dashboard bound beyond localhost hands every visitor the server's file system through its path boxes. In
served mode (`HEADPRUNE_SERVED=1`, or automatic from the server address) a typed path for reading data, loading
a model or writing an export must lie under `HEADPRUNE_DATA_ROOT`, `HEADPRUNE_MODELS_ROOT` or
`HEADPRUNE_EXPORTS_ROOT`; relative paths are taken from that root, `..` and `~` are refused, and symlinks are
resolved before the check. A root left unset turns that kind of typed path off. Uploads and built-in presets are
not typed paths and stay allowed. Outside served mode every path is allowed, as before.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Collection, Mapping

from .errors import InternalError, UserError

SERVED_ENV = "HEADPRUNE_SERVED"
# kind -> (field, environment variable, what it is, what to do instead)
_ROOTS = {
    "data": ("data_root", "HEADPRUNE_DATA_ROOT", "data", "upload the file instead"),
    "model": ("models_root", "HEADPRUNE_MODELS_ROOT", "model", "choose a preset or a Hub id instead"),
    "export": ("exports_root", "HEADPRUNE_EXPORTS_ROOT", "export", "download the results instead"),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # a preset, Hub model or Hub dataset name


def is_local_address(address: str | None) -> bool:
    """Whether a server bound to `address` is reachable from this machine only (None or "" binds everywhere)."""
    host = (address or "").strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # every interface, or a host name: other machines may reach it
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _flag(value: str) -> bool:
    word = value.strip().lower()
    if word not in _TRUE | _FALSE:
        raise UserError(f"{SERVED_ENV}={value!r} is neither on (1, true, yes) nor off (0, false, no)", option=SERVED_ENV)
    return word in _TRUE


def _root(value: str | os.PathLike | None, variable: str) -> Path | None:
    """A configured root as a resolved folder, or None when unset."""
    if value is None or str(value).strip() == "":
        return None
    root = Path(os.path.realpath(os.path.expanduser(value)))
    if not root.is_dir():
        raise UserError(f"{variable}={value} is not a folder; create it or point {variable} at one", option=variable)
    return root


@dataclass(frozen=True)
class PathPolicy:
    """Where typed paths may point: anywhere, or (served) under the data, models and exports roots."""

    served: bool = False
    data_root: Path | None = None
    models_root: Path | None = None
    exports_root: Path | None = None

    @classmethod
    def from_env(cls, *, address: str | None = "localhost", served: bool | None = None,
                 data_root: str | os.PathLike | None = None, models_root: str | os.PathLike | None = None,
                 exports_root: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> PathPolicy:
        """The policy from arguments, else `HEADPRUNE_*` variables; served unless `address` is local or it is turned off.

        `address` is where the dashboard listens (Streamlit's `server.address`; None = every interface).
        """
        env = os.environ if environ is None else environ
        if served is None:
            setting = env.get(SERVED_ENV, "").strip()
            served = _flag(setting) if setting else not is_local_address(address)
        given = {"data": data_root, "model": models_root, "export": exports_root}
        return cls(served=served, **{field: _root(given[kind] if given[kind] is not None else env.get(variable), variable)
                                     for kind, (field, variable, _, _) in _ROOTS.items()})

    def _confine(self, path: str | os.PathLike, kind: str) -> Path:
        """`path` resolved; in served mode relative to `kind`'s root and refused unless it stays under it."""
        field, variable, what, instead = _ROOTS[kind]
        text = os.fspath(path).strip()
        if not text:
            raise UserError(f"no {what} path given")
        if not self.served:
            return Path(os.path.realpath(os.path.expanduser(text)))
        root: Path | None = getattr(self, field)
        if root is None:
            raise UserError(f"this dashboard is served to a class: typed {what} paths are turned off "
                            f"({variable} is not set); {instead}")
        shown = text if len(text) <= 80 else text[:77] + "…"
        refusal = UserError(f"this dashboard is served to a class: typed {what} paths must lie under {root}, "
                            f"and {shown!r} does not; {instead}")
        parts = PurePosixPath(text.replace("\\", "/")).parts
        if "\0" in text or text.startswith("~") or ".." in parts:
            raise refusal
        resolved = Path(os.path.realpath(root / text))
        if not resolved.is_relative_to(root):
            raise refusal
        return resolved

    def readable(self, path: str | os.PathLike, kind: str) -> Path:
        """The resolved path to read `kind` ("data" or "model") from, or `UserError` in served mode outside its root."""
        if kind not in ("data", "model"):
            raise InternalError(f"kind must be 'data' or 'model', got {kind!r}")
        return self._confine(path, kind)

    def writable(self, path: str | os.PathLike) -> Path:
        """The resolved path to write an export to, or `UserError` in served mode unless strictly under the exports root."""
        resolved = self._confine(path, "export")
        if self.served and resolved == self.exports_root:
            raise UserError(f"this dashboard is served to a class: name a folder inside {self.exports_root}, "
                            "not the exports folder itself")
        return resolved

    def source(self, spec: str, kind: str, *, builtin: Collection[str] = ()) -> str:
        """What to load for a typed model or data box: built-in names and Hub names as typed, paths via `readable`.

        A Hub-shaped name counts as a path when it has `.`/`..` parts or names something in the working
        directory (the loaders would read that) or, served, in the kind's root.
        """
        spec = str(spec).strip()
        if spec in builtin:
            return spec
        root = getattr(self, _ROOTS[kind][0]) if self.served else None
        local = os.path.lexists(spec) or (root is not None and os.path.lexists(root / spec))
        if _NAME.match(spec) and not local and not {".", ".."} & set(spec.split("/")):
            return spec
        return str(self.readable(spec, kind))


def safe_upload_name(name: str, content: bytes) -> str:
    """Where to keep an upload, relative to the uploads folder: `<content hash>/<name>`, the name sanitised and
    short (its stem ≤ 48 characters, its suffix kept), so messages show the file as the user named it."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    stem, dot, suffix = base.rpartition(".")
    if not dot or not re.fullmatch(r"[A-Za-z0-9]{1,10}", suffix):
        stem, suffix = base, ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:48] or "upload"
    digest = hashlib.sha256(content).hexdigest()[:16]
    return f"{digest}/{stem}{'.' + suffix.lower() if suffix else ''}"
