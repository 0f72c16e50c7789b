"""The I/O seams: what a remote store must do, stated as protocols.

A :class:`RemoteStore` holds one user's replicated collections and the Devices
collection. The engine never looks inside a store; it relies only on the
contract written in these docstrings, and ``tests/contract`` checks every store
against it.

Positions and versions are opaque strings owned by the store:

* a **cursor** orders the changes of one collection. Every write gets a cursor
  greater than the cursor of every write committed before it, and two writes
  never share one (a store whose clock ties breaks the tie, e.g. with the
  document name), so paging after a cursor never skips or repeats a change;
* a **version** identifies one state of one document; any write changes it.
  Conditional writes compare versions;
* a **position** orders uploads across collections; ``push`` returns the
  position of its commit and records it as the device's ``last_upload``.

Documents carry the row's columns as plain JSON-like values: ``None``, ``bool``,
``int``, ``float``, ``str``, ``bytes``, and for stores that have them, lists and
maps. Device clocks (``updatedOn``) are data only; ordering never uses them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, Protocol, runtime_checkable

import attrs


@attrs.frozen
class RemoteDoc:
    """One document as the remote store holds it."""

    collection: str
    id: str
    data: Mapping[str, Any]
    deleted: bool
    version: str
    cursor: str
    #: why the store could not decode the document (then ``data`` is empty); the
    #: engine sets such a document aside instead of stopping on it
    problem: str | None = None

    @property
    def updated_by(self) -> str | None:
        value = self.data.get("updatedBy")
        return value if isinstance(value, str) else None


@attrs.frozen
class Write:
    """One document write of an atomic batch.

    ``base_version`` is the precondition: ``None`` means the document must not
    exist yet (a create), a string means its current version must equal it.
    ``unconditional`` skips the check (tombstones: deletes always win).
    ``data`` is merged over the stored document, so fields the writer does not
    know (written by a newer app version) survive. ``encoded``, when given, is
    ``codec.encode_json(data)`` already made by the writer: a store of JSON text
    may use it rather than encode ``data`` again; ``size`` likewise.
    """

    collection: str
    id: str
    data: Mapping[str, Any]
    deleted: bool = False
    base_version: str | None = None
    unconditional: bool = False
    encoded: str | None = attrs.field(default=None, eq=False, repr=False)
    #: the document's size as the store counts it, when the writer measured it already
    size: int | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.collection, self.id)


@attrs.frozen
class Page:
    """A page of changes: ``docs`` in cursor order, ``cursor`` after the last one examined.

    ``cursor`` may be past the last returned doc when changes were filtered out
    (a device's own writes); ``more`` says whether another page may follow.
    """

    docs: Sequence[RemoteDoc]
    cursor: str | None
    more: bool


@attrs.frozen
class DeviceRecord:
    """One device's entry in the Devices collection."""

    installation_id: str
    name: str = ""
    platform: str = ""
    app_version: str = ""
    last_sync: str | None = None
    last_upload: str | None = None
    watermarks: Mapping[str, str] = attrs.field(factory=dict)
    #: the generation of the last snapshot this device published (see snapshot.Manifest)
    snapshot_generation: int | None = None

    @classmethod
    def from_stored(
        cls,
        installation_id: str,
        fields: Any,
        *,
        last_sync: str | None,
        last_upload: str | None,
    ) -> DeviceRecord:
        """A record from the fields a store holds (its camelCase names); a field another
        writer damaged reads as unknown instead of failing every device's sync."""
        fields = fields if isinstance(fields, Mapping) else {}

        def text(name: str) -> str:
            value = fields.get(name)
            return value if isinstance(value, str) else ""

        marks, generation = fields.get("watermarks"), fields.get("snapshotGeneration")
        return cls(
            installation_id=installation_id,
            name=text("name"),
            platform=text("platform"),
            app_version=text("appVersion"),
            last_sync=last_sync,
            last_upload=last_upload,
            watermarks={k: v for k, v in marks.items() if isinstance(v, str)}
            if isinstance(marks, Mapping)
            else {},
            snapshot_generation=generation
            if isinstance(generation, int) and not isinstance(generation, bool)
            else None,
        )


@attrs.frozen
class PushResult:
    """What a committed batch produced: each written doc's new version, the commit position,
    and the store's own time of the commit (``server_time``, UTC), when the store tells it."""

    versions: Mapping[tuple[str, str], str]
    position: str
    server_time: _dt.datetime | None = None


@attrs.define
class Usage:
    """Running counts of billable work, read by the engine before and after a sync."""

    reads: int = 0
    writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    def copy(self) -> Usage:
        return Usage(self.reads, self.writes, self.bytes_read, self.bytes_written)

    def minus(self, other: Usage) -> Usage:
        return Usage(
            self.reads - other.reads,
            self.writes - other.writes,
            self.bytes_read - other.bytes_read,
            self.bytes_written - other.bytes_written,
        )


@runtime_checkable
class RemoteStore(Protocol):
    """A remote that several devices of one user sync through.

    Errors: an unreachable store raises ``OfflineError``; a busy or aborted one
    ``TransientError`` after its own bounded retries; a failed precondition
    ``PreconditionFailed`` with nothing written; a document the store cannot
    decode ``RemoteDataError``. A store never raises a driver's exception.
    """

    #: most writes one ``push`` accepts (the device write included)
    max_batch_writes: int
    #: most bytes one encoded document may take, or 0 for no limit
    max_document_bytes: int
    usage: Usage

    def pull(
        self,
        collection: str,
        after: str | None,
        limit: int,
        exclude_by: str | None = None,
        catch_up: bool = False,
    ) -> Page:
        """Changes of ``collection`` with cursor > ``after``, oldest first, at most ``limit``.

        Documents whose ``updatedBy`` equals ``exclude_by`` are skipped but
        still advance the returned cursor. Tombstones are included (``deleted``).
        With ``catch_up`` (the first page of a collection in a sync), a store
        whose commits can become visible out of cursor order also returns the
        changes of a short window before ``after``; the engine skips the ones
        it already holds (same version), so late commits are never lost.
        """
        ...

    def get(self, collection: str, ids: Sequence[str]) -> dict[str, RemoteDoc]:
        """The current documents of ``ids`` that exist (tombstones included)."""
        ...

    def push(self, writes: Sequence[Write], device: DeviceRecord) -> PushResult:
        """Commit ``writes`` and the device's record atomically: all or nothing.

        Documents are never filtered by the ``updatedBy`` they carry: a device
        recognises its own writes by version and content, not by that claim.

        Raises ``PreconditionFailed`` (nothing written) if any write's
        precondition fails. Writing the same batch twice (a retry after a
        lost acknowledgement) never creates a second document: document ids are
        the rows' ids. The device record's ``last_upload`` is set to the
        commit's position and ``last_sync`` to the store's time.
        """
        ...

    def register(self, device: DeviceRecord) -> _dt.datetime | None:
        """Create or update the device's record; ``last_sync`` set to the store's time.

        Returns the store's time of the write (UTC), or ``None`` if it cannot tell;
        the engine measures the device clock's offset from it.
        """
        ...

    def uploads_after(self, position: str | None, exclude: str) -> str | None:
        """The latest ``last_upload`` of devices other than ``exclude`` that is > ``position``.

        ``None`` when no other device uploaded after ``position``. This is the
        seed's "did anyone upload after me" check and costs one read.
        """
        ...

    def devices(self) -> list[DeviceRecord]:
        """Every device record."""
        ...


@runtime_checkable
class IdTokens(Protocol):
    """Where a store acting as a signed-in user gets that user's ID token (a session of
    ``replicator.auth``; tests may pass a fixed source).

    ``id_token()`` returns a token valid for at least the next minute, refreshing it
    first when it is about to expire; ``refresh_id_token()`` forces a refresh (after the
    store answered UNAUTHENTICATED or 401). Both raise ``AuthError`` when the user must
    sign in again (refresh token revoked or expired, account disabled) and
    ``OfflineError`` when the token service cannot be reached. ``uid`` is the user's id.
    """

    uid: str

    def id_token(self) -> str: ...

    def refresh_id_token(self) -> str: ...


@runtime_checkable
class Deadlined(Protocol):
    """Optional capability of a store: give up at an absolute deadline.

    ``at`` is a ``time.monotonic()`` value, or ``None`` for no deadline. Once it
    has passed, every call raises ``OfflineError`` instead of waiting or
    retrying, so a sync on a dead or half-open network ends in bounded time.
    """

    def set_deadline(self, at: float | None) -> None: ...


@runtime_checkable
class NativeTypes(Protocol):
    """Optional capability of a store: it keeps typed values (timestamps, numbers,
    maps) rather than JSON text; rows are converted with ``codec.to_native`` on the
    way up and ``codec.from_native`` on the way down when ``native_types`` is true."""

    native_types: bool


@runtime_checkable
class SizedDocuments(Protocol):
    """Optional capability of a store: the size it counts against
    ``max_document_bytes`` (else: the length of the document's JSON)."""

    def document_size(self, write: Write) -> int: ...


def keeps_native_types(store: object) -> bool:
    return isinstance(store, NativeTypes) and bool(store.native_types)


@runtime_checkable
class Countable(Protocol):
    """Optional capability of a store: how many changes of a collection lie after a
    cursor (an estimate is fine: it only gives a long download's progress a total).
    The engine asks only once a download turns out to take more than one page."""

    def count_after(self, collection: str, after: str | None) -> int: ...


@runtime_checkable
class Sessions(Protocol):
    """Optional capability of a store: share one connection over many calls.

    Inside ``with store.session():`` the store may keep what a call opened
    (a connection, a channel) for the next call of the same thread, and
    releases it when the block ends; a sync runs in one session.
    """

    def session(self) -> AbstractContextManager[None]: ...


@runtime_checkable
class Compactable(Protocol):
    """Optional capability of a store: tombstones are purged after a retention period.

    A purge first raises the collection's **horizon** to the newest cursor it
    purges, then deletes (in one transaction, or horizon first): a device whose
    cursor for the collection is below the horizon may have missed a purged
    delete and must reconcile (see ``sync/download.py``). Cursors of one store
    compare as strings.
    """

    def purge_tombstones(self, collection: str, before: _dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` tombstones of ``collection`` that the store committed
        before ``before`` (aware UTC, the store's time); return how many went. A
        tombstone rewritten meanwhile is left alone."""
        ...

    def horizons(self) -> dict[str, str]:
        """collection → horizon cursor, for the collections that had a purge (one read)."""
        ...

    def collections(self) -> list[str]:
        """The names of the replicated collections the store holds (Devices excluded)."""
        ...


@attrs.frozen
class BlobInfo:
    """An object in a blob store: its size, SHA-256 (hex) and version tag (``etag``)."""

    key: str
    size: int
    sha256: str
    etag: str


@runtime_checkable
class BlobStore(Protocol):
    """Object storage for snapshots and bundles (a directory, S3, anything S3-compatible).

    Every method raises ``OfflineError`` when the storage cannot be reached and
    ``RemoteError`` (not retryable) when it refuses the request (a denied
    credential, a missing bucket); never a driver's exception.
    """

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
        """Store what ``source`` yields (read to its end, streamed) under ``key``, with
        its SHA-256. ``if_none_match``: only if ``key`` does not exist; ``if_match``:
        only if its current ``etag`` is that one; otherwise ``PreconditionFailed`` and
        nothing written. ``on_bytes`` is told the size of each chunk sent. ``sha256``
        (hex), when given, is what the bytes must hash to: the store refuses other bytes
        (``BlobIntegrityError``, nothing written), on S3 through the checksum header, so
        bytes damaged on the way are never stored."""
        ...

    def get(
        self, key: str, dest: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
    ) -> BlobInfo:
        """Write the object into ``dest``, streamed; ``BlobNotFoundError`` if missing."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object, read sequentially (e.g. to decrypt
        while downloading). Raises ``BlobNotFoundError``; the caller closes it."""
        ...

    def head(self, key: str) -> BlobInfo | None:
        """The object's size, SHA-256 and etag, or ``None`` if there is no such key."""
        ...

    def list(self, prefix: str) -> list[BlobInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...


def hash_rest(stream: BinaryIO, block: int = 1 << 20) -> tuple[Any, int]:
    """The SHA-256 (a ``hashlib`` object) and the length of what ``stream`` yields from
    where it stands to its end, read a block at a time; the caller rewinds."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(block):
        digest.update(chunk)
        size += len(chunk)
    return digest, size


class TooLong(Exception):
    """More bytes came than a :class:`HashingWriter` was told to expect."""


class HashingWriter(io.RawIOBase):
    """A writable stream for ``BlobStore.get``: passes bytes on to ``out`` while hashing
    (SHA-256) and counting them, and raises :class:`TooLong` once more than ``limit``
    came, so an object larger than announced is never downloaded to its end."""

    def __init__(self, out: BinaryIO, limit: int) -> None:
        self.out, self.limit = out, limit
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        block = bytes(data)
        self.size += len(block)
        if self.size > self.limit:
            raise TooLong(f"more than the {self.limit} bytes announced")
        self.digest.update(block)
        self.out.write(block)
        return len(block)


@attrs.frozen
class Delivery:
    """One message of an outbox: a batch of events (``gzipped`` JSON) or one event
    (plain JSON). ``msg_id`` is the same on every attempt, so a receiver that drops
    a ``msg_id`` it has seen receives every message exactly once."""

    msg_id: str
    type: str
    body: bytes
    gzipped: bool
    event_count: int
    key: str | None = None


@runtime_checkable
class Sink(Protocol):
    """Where an outbox type's messages go (``stores/http.py`` sends them over HTTP).

    ``deliver`` returns once the receiver acknowledged the message, and raises
    :class:`~replicator.errors.OfflineError` (unreachable) or
    :class:`~replicator.errors.TransientError` (busy, throttled, timed out; with
    ``retry_after`` when the receiver named a delay) when sending again later can
    succeed, and :class:`~replicator.errors.DeliveryRejected` when it cannot.
    """

    def deliver(self, delivery: Delivery) -> None: ...

    def close(self) -> None: ...
