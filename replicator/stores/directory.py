"""DirectoryBlobStore: the embedded default blob store, objects as files in a directory.

Each object ``key`` is the file ``root/key``; its SHA-256 and version tag live
in ``root/key.meta.json`` beside it. Writes go to a temporary file and are
installed with an atomic rename, under an exclusive lock on the key (a lock
file beside it, ``.<name>.lock``, taken with ``filelock``: ``flock`` on POSIX,
``LockFileEx`` on Windows) for every install and delete, so a reader never sees
half an object and two racing conditional writers, threads or processes, cannot
both win.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from ..errors import (
    BlobIntegrityError,
    BlobNotFoundError,
    ConfigurationError,
    OfflineError,
    PreconditionFailed,
    RemoteError,
)
from .base import BlobInfo, BlobStore

_META = ".meta.json"
_BUF = 1 << 20


class DirectoryBlobStore:
    """A :class:`~replicator.stores.base.BlobStore` in a local (or mounted) directory."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root)
        #: whether the folder was ever there: one that never was is a setup mistake,
        #: one that went away (an unmounted share) an outage
        self._seen = False
        if create:
            self._check_not_a_file()
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot make the blob directory {self.root}: {exc.strerror or exc}",
                    hint="name a folder this user may create, or create it first",
                    orig=exc,
                ) from exc
            self._seen = True

    def __repr__(self) -> str:
        return f"DirectoryBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/") or key.endswith(_META) or not key:
            raise ConfigurationError(f"invalid blob key {key!r}")
        return self.root / key

    def _check_not_a_file(self) -> None:
        """A file where the store's folder should be is a setup mistake, not an outage."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigurationError(
                f"the blob directory {self.root} is a file, not a folder",
                hint="name a folder for the blob store (it is created if missing)",
            )

    def _check_root(self) -> None:
        if self.root.is_dir():
            self._seen = True
            return
        self._check_not_a_file()
        if not self._seen:
            raise ConfigurationError(
                f"there is no blob directory {self.root}",
                hint="fix the path, mount the disk it lives on, or let the store create it"
                " (create=True)",
            )
        raise OfflineError(f"the blob directory {self.root} is not there")

    @contextmanager
    def _mapped(self, key: str) -> Iterator[None]:
        """The one place the file system's exceptions become replicator's: a directory
        that went away (an unmounted share) is ``OfflineError``, one that never was
        there or is a file ``ConfigurationError``; any other refusal (access
        denied, a file where a directory should be, a full disk) and damaged metadata
        are ``RemoteError``, which asking again does not cure."""
        self._check_root()
        try:
            yield
        except OSError as exc:
            if not self.root.is_dir():
                raise OfflineError(f"the blob directory {self.root} went away", orig=exc) from exc
            raise RemoteError(
                f"the blob directory {self.root} refused {key!r}: {exc.strerror or exc}",
                hint="check the directory's permissions and free space",
                orig=exc,
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:  # a damaged .meta.json
            raise RemoteError(
                f"the metadata of blob {key!r} in {self.root} is damaged ({exc!r})",
                hint="delete the object and publish again",
                orig=exc,
            ) from exc

    @contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        """Hold the key's exclusive lock: between reading the current version and
        installing the new one no other writer (thread or process) may install or
        delete the key. A ``FileLock`` per call, so no lock object is shared between
        threads (each call waits for the file lock itself)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.parent / f".{path.name}.lock"):
            yield

    def put(
        self,
        key: str,
        source: BinaryIO,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
        sha256: str | None = None,
    ) -> BlobInfo:
        path = self._path(key)
        with self._mapped(key):
            return self._put(key, path, source, if_none_match, if_match, on_bytes, sha256)

    def _put(
        self,
        key: str,
        path: Path,
        source: BinaryIO,
        if_none_match: bool,
        if_match: str | None,
        on_bytes: Callable[[int], None] | None,
        sha256: str | None = None,
    ) -> BlobInfo:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                while block := source.read(_BUF):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
                out.flush()
                os.fsync(out.fileno())
            info = BlobInfo(key, size, digest.hexdigest(), uuid.uuid4().hex)
            if sha256 is not None and info.sha256 != sha256.lower():
                raise BlobIntegrityError(
                    f"blob {key}: the bytes received hash to {info.sha256[:12]}…,"
                    f" not the {sha256[:12]}… announced; nothing stored"
                )
            with self._lock(path):
                current = self._head(key, path)
                if if_none_match and current is not None:
                    raise PreconditionFailed(f"blob {key} already exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise PreconditionFailed(f"blob {key} changed since it was read")
                meta_tmp = Path(tmp + _META)
                meta_tmp.write_text(
                    json.dumps({"size": size, "sha256": info.sha256, "etag": info.etag})
                )
                os.replace(tmp, path)
                os.replace(meta_tmp, Path(str(path) + _META))
            return info
        finally:
            for leftover in (tmp, tmp + _META):
                if os.path.exists(leftover):
                    os.unlink(leftover)

    def head(self, key: str) -> BlobInfo | None:
        path = self._path(key)
        with self._mapped(key):
            return self._head(key, path)

    def _head(self, key: str, path: Path) -> BlobInfo | None:
        try:
            meta = json.loads(Path(str(path) + _META).read_text())
        except FileNotFoundError:
            return None
        if not path.exists():
            return None
        return BlobInfo(key, int(meta["size"]), str(meta["sha256"]), str(meta["etag"]))

    def get(
        self, key: str, dest: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
    ) -> BlobInfo:
        path = self._path(key)
        with self._mapped(key):
            info = self._head(key, path)
            if info is None:
                raise BlobNotFoundError(f"no blob {key} in {self.root}")
            with open(path, "rb") as fh:
                while block := fh.read(_BUF):
                    dest.write(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
        return info

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        with self._mapped(key):
            if self._head(key, path) is None:
                raise BlobNotFoundError(f"no blob {key} in {self.root}")
            return open(path, "rb")

    def list(self, prefix: str) -> list[BlobInfo]:
        out = []
        with self._mapped(prefix):
            for path in self.root.rglob("*"):
                name = path.relative_to(self.root).as_posix()
                visible = not name.endswith(_META) and not path.name.startswith(".")
                if path.is_file() and visible and name.startswith(prefix):
                    info = self._head(name, path)
                    if info is not None:
                        out.append(info)
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._mapped(key), self._lock(path):
            for p in (path, Path(str(path) + _META)):
                if p.exists():
                    p.unlink()

    def destroy(self) -> None:
        """Remove the whole directory (tests)."""
        shutil.rmtree(self.root, ignore_errors=True)


# the protocols this store implements, checked by mypy
_is_blobstore: type[BlobStore] = DirectoryBlobStore
