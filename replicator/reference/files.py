"""Reference files: map tiles of a boundary, routing data, cached beside the database.

**Reference files** (:class:`ReferenceFiles`): a manifest in a ``BlobStore``
(``{prefix}/{boundary}/manifest.json``) lists each file's path, size and SHA-256.
``sync(boundary)`` downloads, several at a time, only the files whose content
differs from what the cache holds, verifies each against the manifest before
installing it by an atomic rename, removes every file the manifest does not list
(so a new boundary clears the old one's tiles), and records the manifest last.

Invariants: a file is installed only once it matches its manifest entry (size and
SHA-256), by an atomic rename, so a reader never sees a partial or unverified
file; a manifest path never leaves the cache directory (no absolute path, ``..``
or backslash) nor names a hidden file; a malformed manifest changes nothing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from ..errors import BlobIntegrityError, ConfigurationError, RemoteDataError
from ..stores.base import BlobStore, HashingWriter, TooLong, hash_rest

log = logging.getLogger(__name__)

FILES_FORMAT = "replicator-files/1"
_LOCAL_MANIFEST = ".manifest.json"
_TMP = ".part-"


@attrs.frozen
class FileEntry:
    """One file of a reference manifest."""

    path: str
    size: int
    sha256: str
    key: str


@attrs.frozen
class FilesReport:
    """What ``ReferenceFiles.sync`` did."""

    boundary: str
    downloaded: tuple[str, ...]
    kept: int
    removed: tuple[str, ...]
    bytes: int


def _entry(item: Any, default_key: Callable[[str], str]) -> FileEntry:
    if not isinstance(item, Mapping):
        raise ValueError("each file is an object with path, size and sha256")
    path, size, sha = item.get("path"), item.get("size"), item.get("sha256")
    if not isinstance(path, str) or not path or len(path) > 1024 or "\\" in path:
        raise ValueError(f"bad path {str(path)[:80]!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute() or any(p in ("", ".", "..") for p in pure.parts) or path != str(pure):
        raise ValueError(f"path {path[:80]!r} must stay inside the cache directory")
    if pure.name.startswith(".") or pure.parts[0].startswith("."):
        raise ValueError(f"path {path[:80]!r} must not be hidden")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 40:
        raise ValueError(f"{path}: size must be a non-negative integer")
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise ValueError(f"{path}: sha256 must be 64 lowercase hex digits")
    key = item.get("key", default_key(path))
    if not isinstance(key, str) or not key:
        raise ValueError(f"{path}: key must be a string")
    return FileEntry(path, size, sha, key)


def parse_manifest(data: bytes, boundary: str, prefix: str) -> dict[str, FileEntry]:
    """The files a reference manifest lists, by path; ``ValueError`` naming what is wrong."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    return _files(raw, boundary, prefix)


def _files(raw: Any, boundary: str, prefix: str) -> dict[str, FileEntry]:
    """The files of a decoded manifest (see :func:`parse_manifest`)."""
    if not isinstance(raw, Mapping) or raw.get("format") != FILES_FORMAT:
        raise ValueError(f"it does not name the format {FILES_FORMAT}")
    if raw.get("boundary") != boundary:
        raise ValueError(f"it describes boundary {raw.get('boundary')!r}, not {boundary!r}")
    files = raw.get("files")
    if not isinstance(files, list):
        raise ValueError("files must be a list")
    out: dict[str, FileEntry] = {}
    for item in files:
        entry = _entry(item, lambda p: f"{prefix}/{boundary}/files/{p}")
        if entry.path in out:
            raise ValueError(f"{entry.path} is listed twice")
        out[entry.path] = entry
    return out


class ReferenceFiles:
    """Files described by a manifest in ``source``, cached under ``cache_dir``.

    ``workers`` files download at once. ``on_progress(done, total)`` is told the
    files handled so far. The cache directory belongs to this object: files in it
    that the current manifest does not list are removed.
    """

    def __init__(
        self,
        source: BlobStore,
        cache_dir: str | os.PathLike[str],
        *,
        prefix: str = "reference",
        workers: int = 4,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigurationError(f"workers must be at least 1, got {workers}")
        self.source = source
        self.cache_dir = Path(cache_dir)
        self.prefix = prefix
        self.workers = workers
        self.on_progress = on_progress

    def path(self, name: str) -> Path:
        """Where the cached file ``name`` (a manifest path) is."""
        return self.cache_dir / PurePosixPath(name)

    def installed(self) -> tuple[str | None, dict[str, FileEntry]]:
        """The boundary and files of the manifest last installed (None, {} if none)."""
        try:
            raw = json.loads((self.cache_dir / _LOCAL_MANIFEST).read_bytes())
            boundary = raw["boundary"]
            return boundary, _files(raw, boundary, self.prefix)
        except (OSError, ValueError, KeyError, TypeError):
            return None, {}

    def sync(self, boundary: str) -> FilesReport:
        """Bring the cache to the manifest of ``boundary``. Raises ``RemoteDataError``
        for a malformed manifest (nothing changed), ``BlobIntegrityError`` when a file
        does not match its manifest entry (the files that did are installed; the next
        sync fetches only the rest), ``OfflineError`` when the store is unreachable."""
        try:
            return self._sync(boundary)
        except OSError as exc:  # the cache directory: not writable, not a directory, full
            raise ConfigurationError(
                f"cannot write the reference cache {self.cache_dir}: {exc.strerror or exc}",
                hint="check the directory's permissions and free space",
                orig=exc,
            ) from exc

    def _sync(self, boundary: str) -> FilesReport:
        if not boundary or "/" in boundary or boundary.startswith("."):
            raise ConfigurationError(f"bad boundary name {boundary!r}")
        manifest_key = f"{self.prefix}/{boundary}/manifest.json"
        buf = io.BytesIO()
        self.source.get(manifest_key, buf)
        raw = buf.getvalue()
        try:
            wanted = parse_manifest(raw, boundary, self.prefix)
        except ValueError as exc:
            raise RemoteDataError("reference", manifest_key, str(exc)) from None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _, before = self.installed()
        todo = [e for e in wanted.values() if not self._holds(e, before.get(e.path))]
        removed = self._clear(set(wanted))
        done, failures, moved = 0, [], 0
        total = len(todo)
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(self._fetch, e): e for e in todo}
            for future in concurrent.futures.as_completed(futures):
                entry = futures[future]
                try:
                    moved += future.result()
                except (BlobIntegrityError, RemoteDataError) as exc:
                    failures.append(exc)
                except Exception:
                    for other in futures:
                        other.cancel()
                    raise
                done += 1
                if self.on_progress is not None:
                    self.on_progress(done, total)
                log.debug("reference file %s installed", entry.path)
        if failures:
            raise failures[0]
        self._write_local(raw)
        return FilesReport(
            boundary=boundary,
            downloaded=tuple(sorted(e.path for e in todo)),
            kept=len(wanted) - len(todo),
            removed=tuple(sorted(removed)),
            bytes=moved,
        )

    def _holds(self, entry: FileEntry, recorded: FileEntry | None) -> bool:
        """Whether the cache already holds ``entry``'s content: recorded with the same
        hash and of the right size, or (not recorded: a sync killed part-way) hashing to it."""
        target = self.path(entry.path)
        try:
            size = target.stat().st_size
        except OSError:
            return False
        if size != entry.size:
            return False
        if recorded is not None and recorded.sha256 == entry.sha256:
            return True
        with target.open("rb") as f:
            return bool(hash_rest(f)[0].hexdigest() == entry.sha256)

    def _clear(self, keep: set[str]) -> list[str]:
        """Remove every file under the cache that ``keep`` does not name (and leftovers
        of interrupted downloads); return the paths removed."""
        removed = []
        for root, dirs, files in os.walk(self.cache_dir, topdown=False):
            for name in files:
                full = Path(root) / name
                rel = full.relative_to(self.cache_dir).as_posix()
                if rel == _LOCAL_MANIFEST or rel in keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    full.unlink()
                if not name.startswith(_TMP):
                    removed.append(rel)
            for name in dirs:
                with contextlib.suppress(OSError):
                    (Path(root) / name).rmdir()  # only when empty
        return removed

    def _fetch(self, entry: FileEntry) -> int:
        target = self.path(entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_TMP)
        try:
            with os.fdopen(fd, "wb") as out:
                hashing = HashingWriter(out, limit=entry.size)
                try:
                    self.source.get(entry.key, hashing)  # type: ignore[arg-type]
                except TooLong:
                    raise BlobIntegrityError(
                        f"reference file {entry.path} is larger than its {entry.size} bytes"
                    ) from None
                out.flush()
                os.fsync(out.fileno())
            if hashing.size != entry.size or hashing.digest.hexdigest() != entry.sha256:
                raise BlobIntegrityError(
                    f"reference file {entry.path} does not match its manifest entry"
                    f" ({hashing.size} bytes, {hashing.digest.hexdigest()[:12]}…)"
                )
            os.replace(tmp, target)
            return hashing.size
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _write_local(self, raw: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=_TMP)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.cache_dir / _LOCAL_MANIFEST)
