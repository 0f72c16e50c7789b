"""Bundle upload (seed 001): upload-only rows go up as checksummed files.

A collection declared upload-only (``Bundles(..., collections=[Household])``)
is never pushed row by row and never downloaded. Each sync, after the
download, its unsynced rows (``isDirty`` = 1: the seed's ``isSynced = false``)
are read in one transaction and compiled into a **bundle**:

1. newline-delimited JSON, gzip-compressed: a header line (format, bundle id,
   device, collection, columns, app version, row count), then one row per line
   in SQLite form (``codec.encode_json``), at most ``max_rows`` rows and about
   ``max_bytes`` of JSON per bundle;
2. its SHA-256 computed, the bundle recorded locally with the ``syncRev`` of
   each row, then put in the ``BlobStore`` under ``{prefix}/{device}/{id}.ndjson.gz``
   with the checksum (on S3 the ``x-amz-checksum-sha256`` header, so the bucket
   refuses bytes damaged on the way);
3. an :class:`IngestRequest` (key, checksum, size, row count) sent to the
   campaign service (:class:`HttpIngest`, or :class:`StoreIngest`: a document in
   the remote store's ``ingest_requests`` collection), which verifies and applies
   it (``ingest.py``);
4. once the service answers *accepted*, in one local transaction, every row
   unchanged since it was bundled is marked synced (``isDirty`` = 0,
   ``serverId`` = its id); rows the service refused keep its reason
   (``Replicator.refused``) and are not sent again until the app changes them.

The bundle id is fixed when the bundle is made, so sending a request again after
a lost answer never applies it twice: the service answers with what it recorded.
A bundle killed before its request was recorded is discarded (and its object
deleted) at the next sync, and its rows go in a new one; a request recorded but
unanswered is sent again. A row changed while its bundle was in flight stays
dirty and goes in the next bundle; the service keeps the later version.
Deleting an upload-only row locally removes it from this device only: bundles
carry rows, not deletes (a row deleted before it was bundled is never sent).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import hashlib
import io
import json
import logging
import socket
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

import attrs
import peewee

from ..codec import decode_json, encode_json
from ..errors import (
    ConfigurationError,
    DeliveryRejected,
    PreconditionFailed,
    RemoteError,
    TransientError,
)
from ..local import BundleRecord
from ..model import collection_name, new_id, remote_columns, shift_time
from ..stores.base import BlobStore, Delivery, DeviceRecord, RemoteStore, Write, hash_rest
from ..sync.context import SyncContext

log = logging.getLogger(__name__)

#: the first line of every bundle names this format
FORMAT = "replicator-bundle/1"
#: the remote store collection that carries ingest requests and their results
QUEUE = "ingest_requests"

State = Literal["accepted", "rejected", "pending"]
_STATES = ("accepted", "rejected", "pending")


def _text(data: Mapping[str, Any], name: str, *, limit: int = 1024) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


@attrs.frozen
class IngestRequest:
    """What a device asks the service to ingest: one bundle, by key and checksum."""

    bundle: str
    key: str
    sha256: str
    size: int
    count: int
    collection: str
    device: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> IngestRequest:
        """A request from its JSON form; ``ValueError`` naming the first bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("an ingest request is a JSON object")
        sha = _text(data, "sha256", limit=64).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError("sha256 must be 64 hex digits")
        return cls(
            bundle=_text(data, "bundle", limit=64),
            key=_text(data, "key"),
            sha256=sha,
            size=_count(data, "size"),
            count=_count(data, "count"),
            collection=_text(data, "collection", limit=256),
            device=_text(data, "device", limit=256),
        )


@attrs.frozen
class IngestResult:
    """The service's answer about one bundle.

    ``accepted``: applied (``refused`` names the rows it would not take, with why);
    ``rejected``: nothing applied, ``reason`` says why (a damaged or mismatched
    bundle); ``pending``: not decided yet (queued, or another ingestor is at it).
    """

    bundle: str
    state: State
    reason: str = ""
    accepted: int = 0
    refused: Mapping[str, str] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "state": self.state,
            "reason": self.reason,
            "accepted": self.accepted,
            "refused": [{"id": k, "reason": v} for k, v in self.refused.items()],
        }

    @classmethod
    def from_json(cls, data: Any) -> IngestResult:
        if not isinstance(data, Mapping):
            raise ValueError("an ingest result is a JSON object")
        state = data.get("state")
        if state not in _STATES:
            raise ValueError(f"state must be one of {', '.join(_STATES)}")
        refused: dict[str, str] = {}
        items = data.get("refused") or []
        if not isinstance(items, list):
            raise ValueError("refused must be a list")
        for item in items:
            if not isinstance(item, Mapping):
                raise ValueError("each refused entry is an object with id and reason")
            refused[_text(item, "id", limit=64)] = str(item.get("reason", ""))[:500]
        reason = data.get("reason", "")
        return cls(
            bundle=_text(data, "bundle", limit=64),
            state=state,
            reason=reason if isinstance(reason, str) else "",
            accepted=_count(data, "accepted") if "accepted" in data else 0,
            refused=refused,
        )


@runtime_checkable
class IngestService(Protocol):
    """Where a device sends its ingest requests.

    ``submit`` sends one request (again, after a lost answer: the service answers
    with what it recorded) and returns the service's answer. It raises
    ``OfflineError`` or ``TransientError`` when asking again later can succeed, and
    ``RemoteError`` when the service refuses the request itself.
    """

    def submit(self, request: IngestRequest, device: DeviceRecord) -> IngestResult: ...


class StoreIngest:
    """Ingest requests as documents of the remote store's ``ingest_requests``
    collection, which ingestors (``replicator ingest``) poll. Asynchronous: the
    first answer is ``pending``; each later sync reads the document's state."""

    def __init__(self, store: RemoteStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"StoreIngest({self.store!r})"

    def submit(self, request: IngestRequest, device: DeviceRecord) -> IngestResult:
        doc = self.store.get(QUEUE, [request.bundle]).get(request.bundle)
        if doc is None:
            data = {**request.to_json(), "state": "pending"}
            # (a PreconditionFailed: sent before, the answer lost; it is there now)
            with contextlib.suppress(PreconditionFailed):
                self.store.push([Write(QUEUE, request.bundle, data)], device)
            return IngestResult(request.bundle, "pending")
        return result_of(request.bundle, doc.data)


def put_once(blobs: BlobStore, key: str, body: BinaryIO, sha256: str) -> bool:
    """Store ``body`` under ``key`` unless something is there already (checked against
    ``sha256`` by the store); True when ``key`` now holds these bytes, whether this put
    wrote them or an earlier one did (a retry), False when it holds other bytes."""
    try:
        blobs.put(key, body, if_none_match=True, sha256=sha256)
    except PreconditionFailed:
        info = blobs.head(key)
        return info is not None and info.sha256 == sha256
    return True


def result_of(bundle: str, data: Mapping[str, Any]) -> IngestResult:
    """The result a queue document records (``pending`` while it is not final)."""
    if data.get("state") in ("accepted", "rejected"):
        try:
            return IngestResult.from_json({**data, "bundle": bundle})
        except ValueError as exc:
            return IngestResult(bundle, "rejected", f"the recorded result is damaged: {exc}")
    return IngestResult(bundle, "pending")


#: the collection an outbox type's events are ingested under: ``outbox:<TYPE>``
EVENTS = "outbox:"


class BundleSink:
    """An outbox sink (seed 000's events by seed 001's path): each message is stored as a
    checksummed object in ``blobs`` under ``{prefix}/outbox/<type>/<msg_id>.json.gz`` and
    announced to ``service``; the ingestor verifies it and keeps its events as documents
    of ``outbox_<type>`` (lower case) in its remote store.

    The bundle id is the message's ``msg_id``, so a message sent again (a lost answer)
    is recognised. Accepted: delivered. Pending (a queue the ingestors have not reached):
    ``TransientError``, so the outbox asks again later. Rejected: ``DeliveryRejected``
    with the service's reason (HTTP-like status 422), and the message is dead-lettered.
    ``device`` names the sender in the requests (default: this host's name).
    """

    def __init__(
        self,
        blobs: BlobStore,
        service: IngestService,
        *,
        device: str | None = None,
        prefix: str = "bundles",
        retry_after: float = 30.0,
    ) -> None:
        self.blobs = blobs
        self.service = service
        self.device = device or f"outbox-{socket.gethostname()}"
        self.prefix = prefix
        self.retry_after = retry_after

    def deliver(self, delivery: Delivery) -> None:
        body = delivery.body
        if not delivery.gzipped:  # one event: in the batch form too, around its data's text
            head = json.dumps({"msg_id": delivery.msg_id, "type": delivery.type})[:-1]
            event = f'{{"key":{json.dumps(delivery.key)},"data":'.encode() + body + b"}"
            body = gzip.compress(head.encode() + b',"events":[' + event + b"]}", mtime=0)
        sha = hashlib.sha256(body).hexdigest()
        key = f"{self.prefix}/outbox/{delivery.type}/{delivery.msg_id}.json.gz"
        if not put_once(self.blobs, key, io.BytesIO(body), sha):
            raise DeliveryRejected(409, f"{key} holds other bytes", delivery.msg_id)
        request = IngestRequest(
            bundle=delivery.msg_id,
            key=key,
            sha256=sha,
            size=len(body),
            count=delivery.event_count,
            collection=f"{EVENTS}{delivery.type}",
            device=self.device,
        )
        result = self.service.submit(
            request, DeviceRecord(self.device, name=self.device, platform="outbox")
        )
        if result.state == "accepted" and result.bundle == delivery.msg_id:
            return
        if result.state == "pending":
            raise TransientError(
                f"the ingest service has not decided on message {delivery.msg_id} yet",
                retry_after=self.retry_after,
            )
        raise DeliveryRejected(422, result.reason or "rejected", delivery.msg_id)

    def close(self) -> None:
        close = getattr(self.service, "close", None)
        if callable(close):
            close()


@attrs.frozen
class Bundles:
    """How upload-only collections go up: as bundles in ``blobs``, announced to
    ``service``. ``collections`` are the upload-only models."""

    blobs: BlobStore
    service: IngestService
    collections: Sequence[type[peewee.Model]]
    #: most rows per bundle
    max_rows: int = 5000
    #: about the most bytes of (uncompressed) JSON per bundle
    max_bytes: int = 16 << 20
    #: where bundles go in the blob store
    prefix: str = "bundles"

    def __attrs_post_init__(self) -> None:
        if not self.collections:
            raise ConfigurationError("Bundles needs at least one upload-only model")
        if self.max_rows < 1 or self.max_bytes < 1024:
            raise ConfigurationError("max_rows must be ≥ 1 and max_bytes ≥ 1024")
        if not isinstance(self.service, IngestService):
            raise ConfigurationError(
                f"{self.service!r} is not an ingest service",
                hint="use HttpIngest(url) or StoreIngest(remote)",
            )

    @property
    def names(self) -> frozenset[str]:
        return frozenset(collection_name(m) for m in self.collections)


@attrs.define
class BundleTally:
    """What the bundle step did: rows accepted and refused per collection, bundles
    the service rejected (with why) and bundles still waiting for an answer."""

    bundled: dict[str, int] = attrs.field(factory=dict)
    refused: dict[str, int] = attrs.field(factory=dict)
    rejected: list[str] = attrs.field(factory=list)
    waiting: int = 0


def send(ctx: SyncContext, config: Bundles) -> BundleTally:
    """Settle the bundles left from earlier syncs, then bundle and send every unsynced
    row of the upload-only collections."""
    tally = BundleTally()
    for record in ctx.local.bundles():
        if record.state == "built":  # killed before its request was recorded
            config.blobs.delete(record.key)
            ctx.local.drop_bundle(record.bundle)
        else:
            _submit(ctx, config, record, tally)
    for model in ctx.models:
        if collection_name(model) not in config.names:
            continue
        coll = collection_name(model)
        # a local delete of an upload-only row is this device's own business
        ctx.local.drop_pending_tombstones(coll)
        total, sent = ctx.local.count_dirty(coll), 0  # (rows in earlier bundles included)
        after = ""
        while True:
            made = _build(ctx, config, model, after)
            if made is None:
                break
            record, rows, body = made
            after = rows[-1][0]
            with body:
                ctx.local.add_bundle(record, rows)
                if not put_once(config.blobs, record.key, body, record.sha256):
                    raise RemoteError(
                        f"the blob store already holds other bytes under {record.key}"
                    )
            ctx.local.set_bundle_state(record.bundle, "requested")
            record = attrs.evolve(record, state="requested")
            if not _submit(ctx, config, record, tally):
                break  # rejected: its rows wait for the next sync, not for this loop
            sent += record.count
            ctx.progress("upload", coll, sent, max(total, sent))
    return tally


def _submit(ctx: SyncContext, config: Bundles, record: BundleRecord, tally: BundleTally) -> bool:
    """Ask the service about ``record`` and act on the answer; False if it rejected it."""
    request = IngestRequest(
        bundle=record.bundle,
        key=record.key,
        sha256=record.sha256,
        size=record.size,
        count=record.count,
        collection=record.collection,
        device=ctx.me,
    )
    result = config.service.submit(request, ctx.device_record())
    if result.bundle != record.bundle:
        raise RemoteError(
            f"the ingest service answered about bundle {result.bundle[:40]!r}"
            f" when asked about {record.bundle}",
            hint="the service is misbehaving; the rows stay unsynced and are asked about again",
        )
    if result.state == "pending":
        tally.waiting += 1
        return True
    if result.state == "rejected":
        log.warning("bundle %s rejected by the service: %s", record.bundle, result.reason)
        tally.rejected.append(f"{record.collection} bundle {record.bundle}: {result.reason}")
        ctx.local.drop_bundle(record.bundle)
        return False
    accepted, refused = ctx.local.settle_bundle(record, result.refused)
    coll = record.collection
    tally.bundled[coll] = tally.bundled.get(coll, 0) + accepted
    if refused:
        tally.refused[coll] = tally.refused.get(coll, 0) + refused
    return True


def _build(
    ctx: SyncContext, config: Bundles, model: type[peewee.Model], after: str
) -> tuple[BundleRecord, list[tuple[str, int]], BinaryIO] | None:
    """The next bundle of ``model``'s unsynced rows that no bundle carries yet, with ids
    after ``after`` (so one sync's bundles never read the rows of its earlier ones
    again), read in one transaction; None when there are none."""
    coll = collection_name(model)
    cols = remote_columns(model)
    names = ", ".join(f'"{c}"' for c in cols)
    shift = ctx.clock_shift()
    bundle = new_id()
    header: dict[str, Any] = {
        "format": FORMAT,
        "bundle": bundle,
        "device": ctx.me,
        "collection": coll,
        "columns": cols,
        "appVersion": ctx.app_version,
    }
    lines: list[bytes] = []
    rows: list[tuple[str, int]] = []
    size = 0
    with ctx.db.atomic():
        cursor = ctx.db.execute_sql(
            f'SELECT {names}, "syncRev" FROM "{coll}" AS t'
            f' INDEXED BY "replicator_{coll}_dirty_ids" WHERE "isDirty" = 1 AND id > ?'
            " AND NOT EXISTS (SELECT 1 FROM replicator_bundle_rows b"
            " WHERE b.collection = ? AND b.id = t.id) ORDER BY id",
            (after, coll),
        )
        for values in cursor:
            row = dict(zip(cols, values[:-1], strict=True))
            if shift is not None:
                row["updatedOn"] = shift_time(row["updatedOn"], shift)
            line = encode_json(row).encode()
            if rows and (len(rows) >= config.max_rows or size + len(line) > config.max_bytes):
                break
            lines.append(line)
            rows.append((row["id"], values[-1]))
            size += len(line) + 1
        cursor.close()
    if not rows:
        return None
    header["count"] = len(rows)
    body = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 - the caller closes it
    with gzip.GzipFile(fileobj=body, mode="wb", mtime=0, compresslevel=6) as packed:
        packed.write(encode_json(header).encode() + b"\n")
        for line in lines:
            packed.write(line + b"\n")
    body.seek(0)
    digest, length = hash_rest(body)  # type: ignore[arg-type]
    body.seek(0)
    record = BundleRecord(
        bundle=bundle,
        collection=coll,
        key=f"{config.prefix}/{ctx.me}/{bundle}.ndjson.gz",
        sha256=digest.hexdigest(),
        size=length,
        count=len(rows),
        state="built",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
    )
    return record, rows, body  # type: ignore[return-value]


def gunzip(data: bytes, limit: int) -> bytes:
    """One whole gzip stream expanded, refusing (``ValueError``) more than ``limit``
    bytes of output (a compression bomb), a truncated stream and trailing bytes."""
    unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = unpack.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"not a gzip file ({exc})") from None
    if len(text) > limit or unpack.unconsumed_tail:
        raise ValueError(f"it expands past {limit} bytes")
    if not unpack.eof:
        raise ValueError("it ends early (truncated)")
    if unpack.unused_data:
        raise ValueError("bytes follow the end of the compressed data")
    return text


def read_bundle(data: bytes, *, limit: int = 1 << 30) -> tuple[dict[str, Any], list[Any]]:
    """A bundle's header and rows (each a decoded JSON value, not yet checked).
    ``ValueError`` when it is not one whole, well-formed bundle, or expands past
    ``limit`` bytes (a compression bomb)."""
    lines = gunzip(data, limit).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        raise ValueError("the bundle is empty")
    try:
        header = decode_json(lines[0])
    except ValueError as exc:
        raise ValueError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"the header does not name the format {FORMAT}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            rows.append(decode_json(line))
        except ValueError:
            raise ValueError(f"line {number} is not JSON") from None
    return header, rows
