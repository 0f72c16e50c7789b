"""DirectoryBlobStore: the embedded default blob store, objects as files in a directory.

Each object ``key`` is the file ``root/key``; its SHA-256 and version tag live
in ``root/key.meta.json`` beside it. Writes go to a temporary file and are
installed with an atomic rename, under an exclusive ``flock`` on the key for
conditional writes, so a reader never sees half an object and two racing
conditional writers cannot both win.
"""

from __future__ import annotations

import fcntl
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

from ..errors import BlobNotFoundError, OfflineError, PreconditionFailed
from .base import BlobInfo

_META = ".meta.json"
_BUF = 1 << 20


class DirectoryBlobStore:
    """A :class:`~replicator.stores.base.BlobStore` in a local (or mounted) directory."""

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DirectoryBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/") or key.endswith(_META):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise OfflineError(f"the blob directory {self.root} is not there")

    @contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def put(
        self,
        key: str,
        source: BinaryIO,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> BlobInfo:
        self._check_root()
        path = self._path(key)
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
            with self._lock(path):
                current = self.head(key)
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
        try:
            meta = json.loads(Path(str(path) + _META).read_text())
        except FileNotFoundError:
            return None
        if not path.exists():
            return None
        return BlobInfo(key, meta["size"], meta["sha256"], meta["etag"])

    def get(
        self, key: str, dest: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
    ) -> BlobInfo:
        self._check_root()
        info = self.head(key)
        if info is None:
            raise BlobNotFoundError(f"no blob {key} in {self.root}")
        with open(self._path(key), "rb") as fh:
            while block := fh.read(_BUF):
                dest.write(block)
                if on_bytes is not None:
                    on_bytes(len(block))
        return info

    def open(self, key: str) -> BinaryIO:
        self._check_root()
        if self.head(key) is None:
            raise BlobNotFoundError(f"no blob {key} in {self.root}")
        return open(self._path(key), "rb")

    def list(self, prefix: str) -> list[BlobInfo]:
        self._check_root()
        out = []
        base = self.root
        for path in base.rglob("*"):
            name = path.relative_to(base).as_posix()
            visible = not name.endswith(_META) and not path.name.startswith(".")
            if path.is_file() and visible and name.startswith(prefix):
                info = self.head(name)
                if info is not None:
                    out.append(info)
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._lock(path):
            for p in (path, Path(str(path) + _META)):
                if p.exists():
                    p.unlink()

    def destroy(self) -> None:
        """Remove the whole directory (tests)."""
        shutil.rmtree(self.root, ignore_errors=True)
