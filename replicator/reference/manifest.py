"""Reference manifests: what a boundary's files are, and the checks they pass first.

A manifest (``{prefix}/{boundary}/manifest.json``) is JSON with ``format``,
``boundary`` and ``files``, each file an object with ``path``, ``size``,
``sha256`` and an optional ``key`` (the blob to fetch; by default
``{prefix}/{boundary}/files/{path}``). It comes from a server, so it is
untrusted: every check below runs before anything in the cache changes, and a
manifest that fails one is refused whole (``ManifestError``, which
``ReferenceFiles.sync`` reports as ``RemoteDataError``).

A path must name a file inside the cache on every platform the cache may live
on: relative, no ``.``/``..``/empty component, no backslash, no control
character (NUL included), none of the characters Windows forbids in names, no
hidden component (names starting with ``.`` are the cache's own), no component
over 255 bytes (the usual file-system limit), at most 1,024 characters. Two
paths may not differ only by case, and no path may be both a file and the
folder of another (``a`` and ``a/b``): one would overwrite the other on disk. A
key must stay under ``{prefix}/`` (no ``..``), so a manifest cannot make a
device fetch anything else from the bucket.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

import attrs

FILES_FORMAT = "replicator-files/1"
#: a manifest larger than this is refused before it is read to its end
MAX_MANIFEST_BYTES = 64 << 20
MAX_PATH_CHARS = 1024
MAX_COMPONENT_BYTES = 255
#: characters a portable path may not hold: control characters and Windows' reserved ones
_FORBIDDEN = frozenset(chr(c) for c in range(32)) | frozenset('\x7f<>:"|?*\\')


class ManifestError(ValueError):
    """What is wrong with a reference manifest (one sentence)."""


@attrs.frozen
class FileEntry:
    """One file of a reference manifest."""

    path: str
    size: int
    sha256: str
    key: str

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "key": self.key}


def _clip(text: object) -> str:
    return repr(str(text)[:80])


def _check_path(path: Any) -> str:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS:
        raise ManifestError(f"bad path {_clip(path)}: a string of 1 to {MAX_PATH_CHARS} characters")
    bad = next((c for c in path if c in _FORBIDDEN), None)
    if bad is not None:
        raise ManifestError(f"path {_clip(path)} holds the character {bad!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or path != str(pure) or any(p in (".", "..") for p in pure.parts):
        raise ManifestError(f"path {_clip(path)} must stay inside the cache directory")
    for part in pure.parts:
        if part.startswith("."):
            raise ManifestError(f"path {_clip(path)} must not be hidden")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise ManifestError(f"path {_clip(path)} has a name over {MAX_COMPONENT_BYTES} bytes")
    return path


def check_name(name: str) -> str:
    """A boundary's name: one path component, portable and not hidden."""
    if not isinstance(name, str) or "/" in name:
        raise ManifestError(f"{_clip(name)} must be one name, without '/'")
    return _check_path(name)


def _check_key(key: Any, path: str, prefix: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_PATH_CHARS:
        raise ManifestError(f"{path}: key must be a string of 1 to {MAX_PATH_CHARS} characters")
    parts = key.split("/")
    if (
        not key.startswith(f"{prefix}/")
        or any(p in ("", ".", "..") for p in parts)
        or any(c in _FORBIDDEN for c in key)
    ):
        raise ManifestError(f"{path}: key {_clip(key)} is not a blob under {prefix}/")
    return key


def _entry(item: Any, prefix: str, default_key: Callable[[str], str]) -> FileEntry:
    if not isinstance(item, Mapping):
        raise ManifestError("each file is an object with path, size and sha256")
    path = _check_path(item.get("path"))
    size, sha = item.get("size"), item.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 40:
        raise ManifestError(f"{path}: size must be a non-negative integer")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ManifestError(f"{path}: sha256 must be 64 lowercase hex digits")
    key = _check_key(item.get("key", default_key(path)), path, prefix)
    return FileEntry(path, size, sha, key)


def _no_clashes(paths: Iterable[str]) -> None:
    """Refuse paths one file system would take for the same file, or for a file and a
    folder at once (compared without case: Windows and macOS ignore it)."""
    files: dict[str, str] = {}
    for path in paths:
        folded = path.casefold()
        if folded in files:
            raise ManifestError(f"{path} is listed twice (or differs from {files[folded]} by case)")
        files[folded] = path
    for folded, path in files.items():
        for parent in PurePosixPath(folded).parents:
            if str(parent) in files:
                raise ManifestError(f"{files[str(parent)]} is both a file and the folder of {path}")


def files_of(raw: Any, boundary: str, prefix: str) -> dict[str, FileEntry]:
    """The files of a decoded manifest, by path (see :func:`parse_manifest`)."""
    if not isinstance(raw, Mapping) or raw.get("format") != FILES_FORMAT:
        raise ManifestError(f"it does not name the format {FILES_FORMAT}")
    if raw.get("boundary") != boundary:
        raise ManifestError(f"it describes boundary {raw.get('boundary')!r}, not {boundary!r}")
    files = raw.get("files")
    if not isinstance(files, list):
        raise ManifestError("files must be a list")
    entries = [_entry(item, prefix, lambda p: f"{prefix}/{boundary}/files/{p}") for item in files]
    _no_clashes(e.path for e in entries)
    return {e.path: e for e in entries}


def decode(data: bytes) -> Any:
    """The JSON of a manifest; ``ManifestError`` for what is not JSON or nests too deep."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ManifestError("its JSON nests too deeply") from None
    except ValueError as exc:  # a JSONDecodeError, bad UTF-8, an integer too long to read
        raise ManifestError(f"not JSON ({str(exc)[:120]})") from None


def parse_manifest(data: bytes, boundary: str, prefix: str) -> dict[str, FileEntry]:
    """The files a reference manifest lists, by path; ``ManifestError`` (a ``ValueError``)
    naming what is wrong."""
    return files_of(decode(data), boundary, prefix)


def encode(boundary: str, files: Iterable[FileEntry]) -> bytes:
    """A manifest listing ``files`` (each with its key): what the cache records as installed."""
    entries = [e.as_json() for e in sorted(files, key=lambda e: e.path)]
    return json.dumps({"format": FILES_FORMAT, "boundary": boundary, "files": entries}).encode()
