"""Fetching a snapshot: find it, download it, and prove it is the one named.

Invariants:

* nothing is fetched before the key is resolved and the manifest
  authenticated (:func:`open_latest`); an older snapshot can only be one the
  authenticated manifest's ``history`` names (:func:`older`);
* the download is decrypted as it arrives, every chunk authenticated
  (AEAD) before its plaintext is written, and the whole object is checked
  against the manifest's size and SHA-256 at the end;
* the snapshot's authenticated header must tell the manifest's story (for an
  older snapshot: name the snapshot asked for), and the result must pass
  SQLite's ``quick_check``;
* ``fetch_and_decrypt`` writes only its ``dest`` file, and any failed check
  raises a ``SnapshotError``: a caller installs nothing it did not verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from ..errors import (
    BlobNotFoundError,
    SnapshotNotFoundError,
    TamperedSnapshotError,
    TruncatedSnapshotError,
    WrongKeyError,
)
from ..stores.base import BlobStore
from .crypto import Kek, Passphrase, SnapshotSecret, decrypt_stream
from .manifest import MANIFEST, Manifest, check_claims, read_manifest, resolve_key


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


def open_latest(
    blobs: BlobStore, key: SnapshotSecret
) -> tuple[Manifest, Kek, dict[str, Any] | None]:
    """Plan a restore: the KEK (kdf.json checked), and the authenticated manifest."""
    try:
        kek, kdf = resolve_key(blobs, key, create=False)
    except SnapshotNotFoundError:
        if isinstance(key, Passphrase) and blobs.head(MANIFEST) is not None:
            raise WrongKeyError(
                "the snapshots were made with a raw key, not a passphrase",
                hint="use the key file the snapshots were made with",
            ) from None
        raise
    manifest = read_manifest(blobs, kek)
    if manifest is None:
        raise SnapshotNotFoundError("the blob store holds no snapshot yet")
    return manifest, kek, kdf


def older(blobs: BlobStore, manifest: Manifest, snapshot_id: str) -> Manifest:
    """A manifest for an older snapshot, one the authenticated manifest's ``history``
    names: its object's size and hash as the store reports them, its claims still
    to be read from its own authenticated header (``fetch_and_decrypt(...,
    is_older=True)`` reads them and checks that the header names ``snapshot_id``)."""
    if snapshot_id == manifest.snapshot_id:
        return manifest
    if snapshot_id not in manifest.history:
        kept = ", ".join(manifest.history) or "none"
        raise SnapshotNotFoundError(
            f"snapshot {snapshot_id} is not one the manifest keeps (kept: {kept})",
            hint="replicator snapshot list shows the snapshots there are",
        )
    key = f"snapshots/{snapshot_id}.snap"
    info = blobs.head(key)
    if info is None:
        raise SnapshotNotFoundError(f"snapshot {snapshot_id} is missing from the blob store")
    return attrs.evolve(
        manifest,
        snapshot_id=snapshot_id,
        key=key,
        sha256=info.sha256,
        size=info.size,
        watermarks={},
        seen_position=None,
        history=(),
    )


def fetch_and_decrypt(
    blobs: BlobStore,
    manifest: Manifest,
    key: SnapshotSecret,
    dest: Path | BinaryIO,
    *,
    on_bytes: Callable[[int], None] | None = None,
    is_older: bool = False,
) -> dict[str, Any]:
    """Download ``manifest``'s snapshot and write the verified plaintext database to ``dest``.

    With ``is_older`` (a manifest made by :func:`older`), the claims come from the
    snapshot's header, which must name the snapshot asked for.

    Checks, in one pass over the download: every chunk's AEAD tag (the bytes are
    the key holder's), the object's size and SHA-256 against the manifest, then
    that the manifest's claims equal the snapshot's authenticated header, and
    SQLite's ``quick_check`` on the result. Raises a ``SnapshotError``; ``dest``
    is the only file written. ``dest`` may instead be a binary file object (an
    encrypted database's restore decrypts into memory): the plaintext is written to
    it, and its ``quick_check`` is the caller's (``cipher.copies.load_image``).
    """
    kek, kdf = resolve_key(blobs, key, create=False)
    try:
        stream = blobs.open(manifest.key)
    except BlobNotFoundError as exc:
        raise SnapshotNotFoundError(
            f"snapshot {manifest.snapshot_id} named by the manifest is missing"
        ) from exc
    try:
        header, reader = _download(stream, manifest, kek, dest, on_bytes)
    finally:
        stream.close()
    _check_object(manifest, reader, is_older=is_older)
    if is_older:
        _check_names_itself(manifest, header)
    else:
        check_claims(manifest, header, kdf)
    if isinstance(dest, Path):
        _quick_check(dest)
    return header


def _download(
    stream: BinaryIO,
    manifest: Manifest,
    kek: Kek,
    dest: Path | BinaryIO,
    on_bytes: Callable[[int], None] | None,
) -> tuple[dict[str, Any], _HashingReader]:
    """Decrypt while downloading: every chunk is authenticated as it arrives, and the
    reader hashes the whole object (read to its end) for the check against the manifest."""
    reader = _HashingReader(stream, on_bytes)
    opened = open(dest, "wb") if isinstance(dest, Path) else contextlib.nullcontext(dest)  # noqa: SIM115
    with opened as out:
        try:
            header = decrypt_stream(reader, out, kek)  # type: ignore[arg-type]
        except TruncatedSnapshotError:
            if manifest.size and reader.size < manifest.size:
                raise _short(manifest, reader) from None
            raise
        reader.drain()
    return header, reader


def _short(manifest: Manifest, reader: _HashingReader) -> TruncatedSnapshotError:
    return TruncatedSnapshotError(
        f"got {reader.size} of {manifest.size} bytes of {manifest.snapshot_id}"
    )


def _check_object(manifest: Manifest, reader: _HashingReader, *, is_older: bool) -> None:
    """The object downloaded is as long as, and hashes to, what the manifest says."""
    if reader.size < manifest.size:
        raise _short(manifest, reader)
    known_hash = manifest.sha256 or not is_older  # a store may not report an object's hash
    if reader.size != manifest.size or (
        known_hash and reader.digest.hexdigest() != manifest.sha256
    ):
        raise TamperedSnapshotError(
            f"snapshot {manifest.snapshot_id} does not match its size and SHA-256 in the manifest"
        )


def _check_names_itself(manifest: Manifest, header: dict[str, Any]) -> None:
    """An older snapshot's authenticated header names the snapshot asked for."""
    meta = header.get("meta")
    if not isinstance(meta, dict) or meta.get("latest") != manifest.snapshot_id:
        raise TamperedSnapshotError(
            f"the object of snapshot {manifest.snapshot_id} holds another snapshot"
        )


def _quick_check(dest: Path) -> None:
    """The decrypted file is a SQLite database that passes ``quick_check``."""
    check = sqlite3.connect(dest)
    try:
        result = check.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise TamperedSnapshotError(f"the restored file is not a SQLite database: {exc}") from exc
    finally:
        check.close()
    if result != "ok":
        raise TamperedSnapshotError(f"the restored database fails its integrity check: {result}")
