"""The service side of bundle uploads: verify a bundle, then apply it.

An :class:`Ingestor` takes ingest requests two ways: over HTTP
(:meth:`Ingestor.serve`, what ``HttpIngest`` talks to) and as documents of the
remote store's ``ingest_requests`` collection (:meth:`Ingestor.poll`, for
``StoreIngest``). Both end in the same steps:

1. **claim** the request's document with a conditional write (its version), so
   of several ingestors on the same queue exactly one works on a bundle; a claim
   is a lease: if its ingestor dies, another takes the bundle over once it expires;
2. **verify**: the object's size, then its SHA-256 computed while it downloads,
   against the request; a complete gzip stream; a header naming the same bundle,
   device, collection and row count; every line JSON. Any failure rejects the
   whole bundle with the reason: nothing of it is applied;
3. **validate** every row against the declared model (its id, its columns, each
   value's type); a row that fails is refused with the reason, the others go on;
4. **apply** rows idempotently by their UUID, in batches, each a conditional
   write: a row is written only if the store has no version of it as recent
   (``updatedOn``), so applying a bundle again, or an older bundle after a newer
   one, changes nothing; a row deleted on the service stays deleted;
5. **record** the result in the request's document: ``accepted`` (with the
   refused rows and why) or ``rejected`` (with why).

Applied rows are ordinary documents of the remote store, so the normal sync shows
them to every other device (a supervisor's). The ingestor writes under its own
device record, ``ingestor-<name>``.
"""

from __future__ import annotations

import datetime as _dt
import errno
import http.server
import json
import logging
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from ..codec import RowCodec, check_id, check_value, missing_value
from ..errors import (
    BlobNotFoundError,
    ConfigurationError,
    PreconditionFailed,
    RemoteDataError,
    RemoteError,
    ReplicatorError,
    TransientError,
)
from ..model import collection_name, remote_columns
from ..stores.base import (
    BlobStore,
    DeviceRecord,
    HashingWriter,
    RemoteDoc,
    RemoteStore,
    TooLong,
    Write,
    keeps_native_types,
)
from ..stores.ingest import QUEUE, IngestRequest, IngestResult, result_of
from .format import EVENTS, gunzip, read_bundle

log = logging.getLogger(__name__)

#: most rows of one bundle refused one by one; past it the whole bundle is rejected, so
#: the result (ids and reasons) always fits in one queue document
MAX_REFUSED = 2000


class BundleRejected(Exception):
    """A bundle that cannot be applied at all; the message is the reason recorded."""


class Ingestor:
    """Verifies and applies bundles from ``blobs`` into ``store``.

    ``models`` are the models the bundles may carry (the app's ``SyncModel``
    classes). ``lease`` (seconds) is how long a claim holds before another ingestor
    may take the bundle over. ``max_bundle_bytes`` bounds a bundle, compressed and
    expanded; ``prefix`` is where bundles are (a request naming another object is
    rejected). ``clock`` gives seconds since the epoch (tests move it).
    """

    def __init__(
        self,
        blobs: BlobStore,
        store: RemoteStore,
        models: Sequence[type[peewee.Model]],
        *,
        name: str | None = None,
        lease: float = 300.0,
        max_bundle_bytes: int = 256 << 20,
        prefix: str = "bundles",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.blobs = blobs
        self.store = store
        self.models = {collection_name(m): m for m in models}
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.lease = lease
        self.max_bundle_bytes = max_bundle_bytes
        #: requests may name objects under this prefix only (``Bundles.prefix``)
        self.prefix = prefix
        self.clock = clock
        self.codec = RowCodec(native=keeps_native_types(store))
        self.device = DeviceRecord(
            installation_id=f"ingestor-{self.name}", name=self.name, platform="ingestor"
        )
        #: the queue's cursor: requests after it have not been looked at yet
        self._cursor: str | None = None
        #: requests another ingestor holds → when its claim lapses
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Ingestor({self.name!r})"

    # -- the two ways in -------------------------------------------------------------

    def submit(self, request: IngestRequest) -> IngestResult:
        """Handle a request that arrived over HTTP: record it in the queue if it is new,
        and ingest it now unless it is decided already or another ingestor holds it."""
        doc = self.store.get(QUEUE, [request.bundle]).get(request.bundle)
        if doc is None:
            claim = {**request.to_json(), **self._claim()}
            try:
                self.store.push([Write(QUEUE, request.bundle, claim)], self.device)
            except PreconditionFailed:  # another ingestor recorded it just now
                doc = self.store.get(QUEUE, [request.bundle]).get(request.bundle)
                if doc is None:
                    return IngestResult(request.bundle, "pending")
            else:
                return self._ingest(request)
        if _request_of(doc) != request:
            return IngestResult(
                request.bundle,
                "rejected",
                "this bundle id was already sent with another key, checksum or size",
            )
        return self._take(doc, request)

    def poll(self, limit: int = 100) -> list[IngestResult]:
        """Ingest up to ``limit`` requests waiting in the store's queue: new ones, and
        ones whose claim by another ingestor has expired. Returns what was decided."""
        out: list[IngestResult] = []
        with self._lock:
            now = self.clock()
            expired = sorted(b for b, until in self._held.items() if until <= now)
            docs = list(self.store.get(QUEUE, expired).values()) if expired else []
            for bundle in expired:
                del self._held[bundle]
            for doc in docs:
                self._take_queued(doc, out)
            while len(out) < limit:
                page = self.store.pull(QUEUE, self._cursor, 200)
                for doc in page.docs:
                    self._take_queued(doc, out)
                    if page.cursor is not None and len(out) >= limit:
                        break
                else:
                    if page.cursor is not None:
                        self._cursor = page.cursor
                    if page.more:
                        continue
                break
        return out

    def _take_queued(self, doc: RemoteDoc, out: list[IngestResult]) -> None:
        if doc.deleted or doc.data.get("state") in ("accepted", "rejected"):
            return
        try:
            request = _request_of(doc)
        except ValueError as exc:
            result = IngestResult(doc.id, "rejected", f"malformed request: {exc}")
            self._record(doc.id, result)
            out.append(result)
            return
        result = self._take(doc, request)
        if result.state == "pending":  # another ingestor holds it: look again when it lapses
            until = doc.data.get("claimedUntil")
            self._held[doc.id] = until if isinstance(until, int | float) else self.clock()
        else:
            out.append(result)

    def run(self, *, poll_every: float = 2.0, stop: threading.Event | None = None) -> None:
        """Poll the queue until ``stop`` is set, logging what was decided; a store that
        cannot be reached is waited out."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                for result in self.poll():
                    log.info("bundle %s %s %s", result.bundle, result.state, result.reason)
            except RemoteError as exc:
                log.warning("ingest queue unreachable: %s", exc)
            stop.wait(poll_every)

    def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None
    ) -> IngestServer:
        """An HTTP endpoint for ``HttpIngest`` on ``host:port`` (0: a free port), running in
        a thread; ``token``: requests must carry ``Authorization: Bearer <token>``."""
        return IngestServer(self, host, port, token)

    # -- claim, ingest, record -------------------------------------------------------------

    def _claim(self) -> dict[str, Any]:
        return {
            "state": "claimed",
            "claimedBy": self.name,
            "claimedUntil": self.clock() + self.lease,
        }

    def _take(self, doc: RemoteDoc, request: IngestRequest) -> IngestResult:
        state = doc.data.get("state")
        if state in ("accepted", "rejected"):
            return result_of(request.bundle, doc.data)
        until = doc.data.get("claimedUntil")
        held = (
            state == "claimed"
            and doc.data.get("claimedBy") != self.name
            and isinstance(until, int | float)
            and until > self.clock()
        )
        if held:
            return IngestResult(request.bundle, "pending")
        try:
            self.store.push(
                [Write(QUEUE, doc.id, self._claim(), base_version=doc.version)], self.device
            )
        except PreconditionFailed:  # another ingestor claimed it first
            return IngestResult(request.bundle, "pending")
        return self._ingest(request)

    def _ingest(self, request: IngestRequest) -> IngestResult:
        started = time.perf_counter()
        try:
            if request.collection.startswith(EVENTS):
                accepted, refused = self._events(request)
            else:
                model = self.models.get(request.collection)
                if model is None:
                    raise BundleRejected(
                        f"{request.collection!r} is not a collection this service takes"
                    )
                accepted, refused = self._apply(model, self._verified(request, model))
            result = IngestResult(request.bundle, "accepted", "", accepted, refused)
        except BundleRejected as exc:
            result = IngestResult(request.bundle, "rejected", str(exc))
        self._record(request.bundle, result)
        log.info(
            "bundle %s from %s: %s (%d rows accepted, %d refused) in %.2f s",
            request.bundle,
            request.device,
            result.state,
            result.accepted,
            len(result.refused),
            time.perf_counter() - started,
        )
        return result

    def _record(self, bundle: str, result: IngestResult) -> None:
        data = {**result.to_json(), "claimedBy": self.name, "decidedAt": self.clock()}
        data.pop("bundle")
        # unconditional: a result is the same whoever decides it, so a second ingestor
        # that took over an expired claim may write it again
        self.store.push([Write(QUEUE, bundle, data, unconditional=True)], self.device)

    def _fetched(self, request: IngestRequest) -> bytes:
        """The object the request names, checked against its size and SHA-256."""
        if not request.key.startswith(f"{self.prefix}/") or ".." in request.key.split("/"):
            raise BundleRejected(f"bundles are taken from {self.prefix}/ only")
        if request.size > self.max_bundle_bytes:
            raise BundleRejected(f"the bundle is larger than {self.max_bundle_bytes} bytes")
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            body = HashingWriter(spool, request.size)  # type: ignore[arg-type]
            try:
                self.blobs.get(request.key, body)  # type: ignore[arg-type]
            except BlobNotFoundError:
                raise BundleRejected(f"no bundle at {request.key}") from None
            except TooLong:
                raise BundleRejected(
                    f"the bundle is longer than the {request.size} bytes announced"
                ) from None
            if body.size != request.size:
                raise BundleRejected(
                    f"the bundle has {body.size} bytes, the request says {request.size}"
                )
            if body.digest.hexdigest() != request.sha256:
                raise BundleRejected(
                    "the bundle's SHA-256 differs from the request's: it was altered"
                )
            spool.seek(0)
            return spool.read()

    def _verified(self, request: IngestRequest, model: type[peewee.Model]) -> list[Any]:
        """The rows of a verified bundle whose header agrees with the request and names
        no column the model lacks."""
        data = self._fetched(request)
        try:
            header, rows = read_bundle(data, limit=self.max_bundle_bytes)
        except ValueError as exc:
            raise BundleRejected(f"not a readable bundle: {exc}") from None
        for name, want in (
            ("bundle", request.bundle),
            ("device", request.device),
            ("collection", request.collection),
            ("count", request.count),
        ):
            if header.get(name) != want:
                raise BundleRejected(f"the bundle's header names another {name} than the request")
        columns = header.get("columns")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise BundleRejected("the bundle's header does not list its columns")
        newer = sorted(set(columns) - set(remote_columns(model)))
        if newer:  # rejected whole, so the rows are sent again once the service knows them
            raise BundleRejected(
                f"the bundle has columns this service does not know ({', '.join(newer)[:200]}):"
                " a newer app version; upgrade the service's models"
            )
        if len(rows) != request.count:
            raise BundleRejected(
                f"the bundle holds {len(rows)} rows, its header says {request.count}"
            )
        return rows

    def _events(self, request: IngestRequest) -> tuple[int, dict[str, str]]:
        """An outbox message (``BundleSink``): its events become documents of
        ``outbox_<type>``, one per event, keyed by the message id and position, so a
        message applied again changes nothing."""
        type_ = request.collection[len(EVENTS) :]
        if not type_ or not all(c.isalnum() or c in "_-" for c in type_) or len(type_) > 100:
            raise BundleRejected(f"{type_[:40]!r} is not an outbox type name")
        try:
            body = json.loads(gunzip(self._fetched(request), self.max_bundle_bytes))
        except ValueError as exc:
            raise BundleRejected(f"not a readable outbox message: {exc}") from None
        if not (isinstance(body, dict) and isinstance(body.get("events"), list)):
            raise BundleRejected("an outbox message is an object with a list of events")
        if body.get("msg_id") != request.bundle or body.get("type") != type_:
            raise BundleRejected("the message names another msg_id or type than the request")
        events = body["events"]
        if len(events) != request.count:
            raise BundleRejected(
                f"the message holds {len(events)} events, the request says {request.count}"
            )
        coll = f"outbox_{type_.lower()}"
        docs = {
            f"{request.bundle}.{n}": {
                "type": type_,
                "device": request.device,
                "msg_id": request.bundle,
                "key": e.get("key") if isinstance(e, dict) else None,
                "timestamp": e.get("timestamp") if isinstance(e, dict) else None,
                "data": json.dumps(e.get("data") if isinstance(e, dict) else e),
            }
            for n, e in enumerate(events)
        }
        self._write(
            coll,
            list(docs),
            lambda chunk, there: [Write(coll, i, docs[i]) for i in chunk if i not in there],
        )
        return len(docs), {}

    def _apply(self, model: type[peewee.Model], rows: list[Any]) -> tuple[int, dict[str, str]]:
        coll = collection_name(model)
        fields = {f.column_name: f for f in model._meta.sorted_fields}
        cols = remote_columns(model)
        refused: dict[str, str] = {}
        valid: dict[str, dict[str, Any]] = {}
        for number, raw in enumerate(rows, start=1):
            try:
                row = _checked(coll, fields, cols, raw)
            except RemoteDataError as exc:
                named = isinstance(raw, dict) and raw.get("id") == exc.doc_id
                refused[exc.doc_id if named else f"line {number + 1}"] = exc.reason[:200]
                continue
            if row["id"] in valid:
                refused[row["id"]] = "the bundle holds this id twice"
                continue
            valid[row["id"]] = row
        if len(refused) > MAX_REFUSED:  # the result must fit in one queue document
            first = next(iter(refused.items()))
            raise BundleRejected(
                f"{len(refused)} rows are invalid (more than {MAX_REFUSED}); the first,"
                f" {first[0]}: {first[1]}"
            )
        for rid in refused:
            valid.pop(rid, None)
        deleted: dict[str, bool] = {}  # per row, as the store stood at the write that counted

        def writes(chunk: list[str], current: dict[str, RemoteDoc]) -> list[Write]:
            out = []
            for rid in chunk:
                doc, row = current.get(rid), valid[rid]
                deleted[rid] = doc is not None and doc.deleted
                if deleted[rid]:
                    continue
                if doc is not None and not _newer(row, self.codec.incoming(model, doc).data):
                    continue  # applied before (or a later version is there): idempotent
                base = doc.version if doc is not None else None
                out.append(Write(coll, rid, self.codec.outgoing(model, row), base_version=base))
            return out

        self._write(coll, list(valid), writes)
        for rid, gone in deleted.items():
            if gone:
                refused[rid] = "deleted on the service"
        return sum(not gone for gone in deleted.values()), refused

    def _write(
        self,
        coll: str,
        ids: list[str],
        writes: Callable[[list[str], dict[str, RemoteDoc]], list[Write]],
    ) -> None:
        """Write the documents ``ids`` of ``coll`` in batches the store takes. ``writes``
        turns a batch's ids and the documents the store holds for them now into the writes
        still needed; a batch another writer beat (a device, another ingestor) is looked
        at and planned again."""
        per_batch = max(1, self.store.max_batch_writes - 1)
        for start in range(0, len(ids), per_batch):
            chunk = ids[start : start + per_batch]
            for _attempt in range(8):
                needed = writes(chunk, self.store.get(coll, chunk))
                if not needed:
                    break
                try:
                    self.store.push(needed, self.device)
                    break
                except PreconditionFailed:
                    continue
            else:
                raise TransientError(f"documents of {coll} kept changing while being ingested")


def _newer(row: dict[str, Any], stored: Any) -> bool:
    """Whether ``row`` is a later version than the stored document (by ``updatedOn``)."""
    mine, theirs = _when(row.get("updatedOn")), _when(stored.get("updatedOn"))
    if theirs is None:
        return True
    if mine is None:
        return False
    return mine > theirs


def _when(value: Any) -> _dt.datetime | None:
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return _dt.datetime.fromisoformat(value).replace(tzinfo=None)
        except ValueError:
            return None
    return None


def _checked(
    coll: str, fields: dict[str, peewee.Field], cols: list[str], raw: Any
) -> dict[str, Any]:
    """A bundle row checked against the model, in SQLite form; ``RemoteDataError`` why not."""
    if not isinstance(raw, dict):
        raise RemoteDataError(coll, "?", "the line is not a JSON object")
    doc_id = check_id(coll, raw.get("id"))
    unknown = sorted(set(raw) - set(cols))
    if unknown:
        raise RemoteDataError(coll, doc_id, f"unknown field {unknown[0]!r}")
    out: dict[str, Any] = {}
    for col in cols:
        field = fields[col]
        if col not in raw:
            if col in ("updatedOn", "updatedBy", "createdOn"):
                raise RemoteDataError(coll, doc_id, f"{col} is missing")
            out[col] = missing_value(field)
            if out[col] is None and not field.null:
                raise RemoteDataError(coll, doc_id, f"{col} is missing")
            continue
        out[col] = check_value(coll, doc_id, field, raw[col])
    if _when(out.get("updatedOn")) is None:
        raise RemoteDataError(coll, doc_id, "updatedOn is not a timestamp")
    return out


def _request_of(doc: RemoteDoc) -> IngestRequest:
    return IngestRequest.from_json({**doc.data, "bundle": doc.id})


class IngestServer:
    """``Ingestor.serve``'s HTTP endpoint: ``POST`` an ingest request as JSON, get the
    result as JSON (200 when decided, 202 while pending; 400 for a malformed request,
    401 without the token, 503 when the store or the blob storage cannot be reached)."""

    def __init__(self, ingestor: Ingestor, host: str, port: int, token: str | None) -> None:
        self.ingestor = ingestor
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("ingest http: " + format, *args)

            def do_POST(self) -> None:
                status, body = outer._handle(self)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._token = token
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        except (OSError, OverflowError) as exc:  # in use, not this machine's, out of range
            busy = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigurationError(
                f"cannot serve on {host}:{port}: {reason}",
                hint="choose another port, or stop the program that holds it"
                if busy
                else "give an address of this machine (e.g. 127.0.0.1 or 0.0.0.0) and a"
                " port from 0 to 65535",
                orig=exc,
            ) from exc
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/ingest"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="ingest-http", daemon=True
        )
        self._thread.start()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        if (
            self._token is not None
            and handler.headers.get("Authorization") != f"Bearer {self._token}"
        ):
            return 401, {"error": "missing or wrong bearer token"}
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            return 400, {"error": "bad Content-Length"}
        if not 0 < length <= 1 << 16:
            return 400, {"error": "an ingest request is a JSON object of at most 64 KiB"}
        try:
            request = IngestRequest.from_json(json.loads(handler.rfile.read(length)))
        except ValueError as exc:
            return 400, {"error": f"malformed ingest request: {exc}"}
        try:
            result = self.ingestor.submit(request)
        except ReplicatorError as exc:
            log.warning("ingest of %s failed: %s", request.bundle, exc)
            return 503, {"error": f"{type(exc).__name__}: {exc.message}"}
        except Exception:  # a bug: the device is told to try later, the log has the trace
            log.exception("ingest of %s failed unexpectedly", request.bundle)
            return 500, {"error": "the ingest service failed; try again later"}
        return (202 if result.state == "pending" else 200), result.to_json()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> IngestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
