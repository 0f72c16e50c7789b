"""Encrypted database snapshots in a blob store: publish (Big Brother) and restore.

Blob layout, under the store's prefix::

    snapshots/manifest.json     names the latest snapshot and the watermarks it covers
    snapshots/kdf.json          scrypt salt and parameters, when a passphrase is used
    snapshots/{id}.snap         immutable encrypted snapshots (format: crypto.py)

Publishing: a consistent copy of the live database (``VACUUM INTO``) with the
device-local tables emptied, encrypted to a temporary file, uploaded under a
new id, then the manifest is swapped with a conditional write against the
version read before deciding. Of two racing devices, the one whose manifest
write loses re-reads the manifest and only retries if it still holds newer
data; otherwise it deletes its upload and skips. The last ``keep`` snapshots
are kept.

Restoring: plan (read the manifest), download while hashing (SHA-256 checked
against the manifest) and decrypting (AEAD checked chunk by chunk) into a
temporary file beside the database, ``PRAGMA integrity_check``, then install
the synced tables in one transaction (``restore.py``). Any failure leaves the
database as it was.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .crypto import Passphrase, SnapshotKey, decrypt_stream, encrypt_stream, new_kdf_params
from .errors import (
    BlobNotFoundError,
    ConfigurationError,
    PreconditionFailed,
    SnapshotNotFoundError,
    TamperedSnapshotError,
    TruncatedSnapshotError,
)
from .local import DEVICE_LOCAL_TABLES
from .stores.base import BlobStore

MANIFEST = "snapshots/manifest.json"
KDF = "snapshots/kdf.json"
FORMAT = 1


@attrs.frozen
class Manifest:
    """What the blob store says about its latest snapshot."""

    snapshot_id: str
    key: str
    sha256: str
    size: int
    created: str
    watermarks: Mapping[str, str]
    seen_position: str | None
    device_name: str
    history: tuple[str, ...]
    etag: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "latest": self.snapshot_id,
                "key": self.key,
                "sha256": self.sha256,
                "size": self.size,
                "created": self.created,
                "watermarks": dict(self.watermarks),
                "seen_position": self.seen_position,
                "device_name": self.device_name,
                "history": list(self.history),
            },
            sort_keys=True,
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, etag: str) -> Manifest:
        try:
            d = json.loads(data)
            return cls(
                snapshot_id=d["latest"],
                key=d["key"],
                sha256=d["sha256"],
                size=int(d["size"]),
                created=d["created"],
                watermarks=d.get("watermarks") or {},
                seen_position=d.get("seen_position"),
                device_name=d.get("device_name", ""),
                history=tuple(d.get("history") or ()),
                etag=etag,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise TamperedSnapshotError("the snapshot manifest is not readable") from exc


def _read_small(blobs: BlobStore, key: str) -> tuple[bytes, str] | None:
    """A small object's bytes and etag, or None if it does not exist."""
    buf = io.BytesIO()
    try:
        info = blobs.get(key, buf)
    except BlobNotFoundError:
        return None
    return buf.getvalue(), info.etag


def read_manifest(blobs: BlobStore) -> Manifest | None:
    found = _read_small(blobs, MANIFEST)
    return None if found is None else Manifest.from_json(*found)


def resolve_key(
    blobs: BlobStore, key: Any, *, create: bool
) -> tuple[SnapshotKey, dict[str, Any] | None]:
    """The KEK for ``key`` (raw bytes, SnapshotKey or Passphrase) and the kdf params, if any."""
    if isinstance(key, bytes):
        key = SnapshotKey(key)
    if isinstance(key, SnapshotKey):
        return key, None
    if not isinstance(key, Passphrase):
        raise ConfigurationError(
            "snapshot key must be 32 bytes, a SnapshotKey or a Passphrase",
            hint="pass key=SnapshotKey(...) or key=Passphrase('...') to Replicator",
        )
    found = _read_small(blobs, KDF)
    if found is None:
        if not create:
            raise SnapshotNotFoundError("no passphrase parameters beside the snapshots")
        # if another device creates them first, its parameters are the ones read back
        with contextlib.suppress(PreconditionFailed):
            blobs.put(KDF, io.BytesIO(json.dumps(new_kdf_params()).encode()), if_none_match=True)
        found = _read_small(blobs, KDF)
        if found is None:
            raise SnapshotNotFoundError("the passphrase parameters vanished while being created")
    kdf = json.loads(found[0])
    return key.derive(kdf), kdf


@contextmanager
def _temp_beside(path: Path, tag: str) -> Iterator[Path]:
    tmp = path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    finally:
        for p in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            if p.exists():
                p.unlink()


def clean_leftovers(db_path: Path) -> None:
    """Remove temporary files a killed restore or snapshot left beside the database."""
    for p in db_path.parent.glob(f".{db_path.name}.*-*"):
        if p.is_file():
            p.unlink()


def write_plain_copy(conn: sqlite3.Connection | Any, dest: Path, tables: Sequence[str]) -> None:
    """A consistent copy of the synced ``tables`` and replicator's metadata.

    Tables the app keeps for itself never leave the device: they are dropped
    from the copy (with ``secure_delete``, then a ``VACUUM``, so none of their
    bytes remain), and so is device-local state.
    """
    from .restore import CARRIED, DEVICE_ONLY

    keep = {*tables, *CARRIED, *DEVICE_ONLY, *DEVICE_LOCAL_TABLES, "replicator_control"}
    conn.execute("VACUUM INTO ?", (str(dest),))
    copy = sqlite3.connect(dest, isolation_level=None)
    try:
        copy.execute("PRAGMA secure_delete = ON")
        copy.execute("PRAGMA foreign_keys = OFF")
        copy.execute("BEGIN")
        for kind, name in copy.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            if kind == "view":
                copy.execute(f'DROP VIEW "{name}"')
            elif name not in keep:
                copy.execute(f'DROP TABLE "{name}"')
        for table in (*DEVICE_LOCAL_TABLES, *DEVICE_ONLY):
            copy.execute(f'DELETE FROM "{table}"')
        copy.execute("UPDATE replicator_control SET applying = 0")
        copy.execute("COMMIT")
        copy.execute("VACUUM")
        copy.execute("PRAGMA journal_mode = DELETE")
    finally:
        copy.close()


def publish(
    *,
    connection: Any,
    db_path: Path,
    blobs: BlobStore,
    key: Any,
    watermarks: Mapping[str, str],
    seen_position: str | None,
    device_name: str,
    expected: Manifest | None,
    keep: int = 3,
    on_bytes: Callable[[int], None] | None = None,
    tables: Sequence[str] = (),
) -> Manifest:
    """Upload a snapshot and swap the manifest from ``expected`` to it.

    Raises ``PreconditionFailed`` if the manifest changed since ``expected`` was
    read (the uploaded object is deleted again).
    """
    kek, kdf = resolve_key(blobs, key, create=True)
    created = _dt.datetime.now(_dt.timezone.utc)
    snapshot_id = created.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
    object_key = f"snapshots/{snapshot_id}.snap"
    with _temp_beside(db_path, "snapshot") as plain, _temp_beside(db_path, "sealed") as sealed:
        write_plain_copy(connection, plain, tables)
        meta = {
            "snapshot_id": snapshot_id,
            "created": created.isoformat(),
            "watermarks": dict(watermarks),
        }
        with open(plain, "rb") as src, open(sealed, "wb") as dst:
            encrypt_stream(src, dst, kek, meta, kdf=kdf, on_bytes=on_bytes)
        with open(sealed, "rb") as src:
            info = blobs.put(object_key, src)
    history = (snapshot_id, *(expected.history if expected else ()))
    manifest = Manifest(
        snapshot_id=snapshot_id,
        key=object_key,
        sha256=info.sha256,
        size=info.size,
        created=created.isoformat(),
        watermarks=dict(watermarks),
        seen_position=seen_position,
        device_name=device_name,
        history=history[:keep],
    )
    try:
        if expected is None:
            blobs.put(MANIFEST, io.BytesIO(manifest.to_json()), if_none_match=True)
        else:
            blobs.put(MANIFEST, io.BytesIO(manifest.to_json()), if_match=expected.etag)
    except PreconditionFailed:
        blobs.delete(object_key)
        raise
    for old in history[keep:]:
        blobs.delete(f"snapshots/{old}.snap")
    return manifest


class _HashingReader:
    """Reads a stream while hashing and counting what passes (progress included)."""

    def __init__(self, stream: Any, on_bytes: Callable[[int], None] | None) -> None:
        self.stream = stream
        self.on_bytes = on_bytes
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.stream.read(n)
        while 0 < len(data) < n:  # network streams may return short reads
            more = self.stream.read(n - len(data))
            if not more:
                break
            data += more
        self.digest.update(data)
        self.size += len(data)
        if self.on_bytes is not None and data:
            self.on_bytes(len(data))
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def fetch_and_decrypt(
    blobs: BlobStore,
    manifest: Manifest,
    key: Any,
    dest: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Download ``manifest``'s snapshot and write the verified plaintext database to ``dest``."""
    kek: Any = key if isinstance(key, Passphrase) else resolve_key(blobs, key, create=False)[0]
    try:
        stream = blobs.open(manifest.key)
    except BlobNotFoundError as exc:
        raise SnapshotNotFoundError(
            f"snapshot {manifest.snapshot_id} named by the manifest is missing"
        ) from exc
    # decrypt while downloading: every chunk is authenticated as it arrives, and
    # the whole object is checked against the manifest's SHA-256 at the end
    try:
        reader = _HashingReader(stream, on_bytes)
        with open(dest, "wb") as out:
            try:
                header = decrypt_stream(reader, out, kek)  # type: ignore[arg-type]
            except TruncatedSnapshotError:
                if manifest.size and reader.size < manifest.size:
                    raise TruncatedSnapshotError(
                        f"got {reader.size} of {manifest.size} bytes of {manifest.snapshot_id}"
                    ) from None
                raise
            reader.drain()
    finally:
        stream.close()
    if reader.size < manifest.size:
        raise TruncatedSnapshotError(
            f"got {reader.size} of {manifest.size} bytes of {manifest.snapshot_id}"
        )
    if reader.digest.hexdigest() != manifest.sha256:
        raise TamperedSnapshotError(
            f"snapshot {manifest.snapshot_id} does not match its SHA-256 in the manifest"
        )
    check = sqlite3.connect(dest)
    try:
        result = check.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise TamperedSnapshotError(f"the restored file is not a SQLite database: {exc}") from exc
    finally:
        check.close()
    if result != "ok":
        raise TamperedSnapshotError(f"the restored database fails its integrity check: {result}")
    return header
