"""FirestoreRemote: the RemoteStore on Google Cloud Firestore.

Layout, under ``root`` (typically ``users/{uid}``)::

    {root}/{collection}/{id}            the row's columns, typed natively,
                                        plus ``deleted`` and ``changedAt``
    {root}/devices/{installationId}     the Devices collection

``changedAt`` is ``SERVER_TIMESTAMP``: every write of one batch shares it, so
download order is ``(changedAt, document name)``, which never ties, and cursors
carry both. Device clocks (``updatedOn``) never order anything. A document's
``update_time`` is its version; updates carry it as a precondition and creates
use ``create()``, so a remote change made since this device read the row fails
the whole batch (nothing written) instead of being overwritten, and a create
retried after a lost acknowledgement cannot make a second document (the
document id is the row's UUID).

Commits and reads are retried on ``Aborted``, ``Unavailable``, deadline and
internal errors with exponential backoff and jitter, a bounded number of times
and with explicit timeouts (the client's own default would retry for minutes).
Then ``Unavailable`` and deadlines become ``OfflineError``, the others
``TransientError``. One call takes at most ``attempts * timeout`` plus the
backoff (about 3.2 s for 5 attempts): 103 s with the defaults on a connection
that never answers. ``Replicator.sync(timeout=...)`` sets one overall deadline
instead (``set_deadline``), after which every call gives up with
``OfflineError``. After a call found Firestore unreachable, the next one (a
retry, or the first call of the next sync) goes through a fresh gRPC channel
(``firestore_dial.redial``): a sync started once the network is back does not
fail on gRPC's reconnect backoff.

Server timestamps can become visible slightly out of order (the emulator shows
it under concurrent commits), so a sync's first page of each collection, and
the Devices check, look ``settle`` seconds back and skip what they already hold.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..codec import ROW_ID_RULE, names_a_document
from ..errors import (
    ConfigurationError,
    OfflineError,
    PreconditionFailed,
    RemoteError,
    TransientError,
    UnsupportedValueError,
)
from .base import (
    Compactable,
    Countable,
    Deadlined,
    DeviceRecord,
    NativeTypes,
    Page,
    PushResult,
    RemoteDoc,
    RemoteStore,
    SizedDocuments,
    Usage,
    Write,
)

try:
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry
    from google.cloud import firestore

    from .firestore_dial import redial
    from .firestore_writes import document_write
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "FirestoreRemote needs google-cloud-firestore: pip install 'replicator[firestore]'"
    ) from exc

T = TypeVar("T")

#: the client never retries by itself: ``FirestoreRemote._call`` is the one retry policy
_NO_RETRY = Retry(predicate=lambda _exc: False)

DEVICES = "devices"
#: replicator's own collection: the ``horizons`` document (see ``purge_tombstones``)
META = "replicator_meta"
HORIZONS = "horizons"
CHANGED_AT = "changedAt"
DELETED = "deleted"
MAX_DOCUMENT_BYTES = 1_048_576

log = logging.getLogger(__name__)

#: Firestore's answers that mean it could not be reached, and those worth asking again
OFFLINE_ERRORS = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError)
TRANSIENT_ERRORS = (gexc.Aborted, gexc.InternalServerError, gexc.TooManyRequests, gexc.Unknown)
# (Aborted is a Conflict too: it is matched first, as transient)
_PRECONDITION = (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound)
# asking again changes nothing: a credential, a rule or a request at fault
_REFUSED = (
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.InvalidArgument,
    gexc.BadRequest,
    gexc.Forbidden,
)


def _ts(value: _dt.datetime) -> str:
    """A timestamp as a sortable string with microseconds, UTC."""
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)


def value_size(value: Any) -> int:
    """Bytes a value takes in a Firestore document (the documented storage sizes)."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float | _dt.datetime):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8")) + 1
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(k).encode("utf-8")) + 1 + value_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(value_size(v) for v in value)
    return len(str(value)) + 1


class FirestoreRemote:
    """A :class:`~replicator.stores.base.RemoteStore` on a ``google.cloud.firestore.Client``.

    ``root`` is the document under which the collections live (``users/{uid}``),
    or ``""`` for top-level collections. ``timeout`` bounds each call,
    ``attempts`` the retries of a failing one. Works against production and
    against the emulator (set ``FIRESTORE_EMULATOR_HOST``). With a client of
    service-account credentials it runs as admin, past every security rule: for
    servers and admin tools (the ingest service, ``replicator compact``). Devices
    use ``firestore_user.UserFirestoreRemote``, which acts as the signed-in user.
    """

    max_batch_writes = 500
    max_document_bytes = MAX_DOCUMENT_BYTES
    native_types = True

    def __init__(
        self,
        client: firestore.Client,
        root: str = "",
        *,
        timeout: float = 20.0,
        attempts: int = 5,
        settle: float = 2.0,
        owned: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        parts = [p for p in root.split("/") if p]
        if len(parts) % 2:
            raise ConfigurationError(
                f"root {root!r} names a collection, not a document",
                hint="use a document path such as 'users/<uid>'",
            )
        self.client = client
        self.root = "/".join(parts)
        self.timeout = timeout
        self.attempts = attempts
        self.settle = _dt.timedelta(seconds=settle)
        self.usage = Usage()
        self._deadline: float | None = None
        #: the last call found Firestore unreachable: the next one dials afresh (``redial``)
        self._unreachable = False
        #: calls retried after Aborted/Unavailable/deadline errors (for monitoring)
        self.retries = 0
        #: collections read only where a column holds a value, ``{collection: (column,
        #: value)}``: a role granted ``read:own`` downloads the rows whose owner column is
        #: its uid (the rules refuse any query not so filtered)
        self.owned = dict(owned or {})

    def __repr__(self) -> str:
        return f"FirestoreRemote(root={self.root!r})"

    # -- plumbing -------------------------------------------------------------------

    def _collection(self, name: str) -> Any:
        if self.root:
            return self.client.document(self.root).collection(name)
        return self.client.collection(name)

    def _filtered(self, name: str) -> Any:
        """A query of the collection ``name``, kept to the caller's rows when ``owned``
        names it."""
        ref = self._collection(name)
        if name in self.owned:
            column, value = self.owned[name]
            return ref.where(filter=firestore.FieldFilter(column, "==", value))
        return ref

    def set_deadline(self, at: float | None) -> None:
        """Give up (``OfflineError``) once ``time.monotonic()`` passes ``at``; None: no deadline."""
        self._deadline = at

    def _remaining(self, what: str) -> float:
        if self._deadline is None:
            return self.timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise OfflineError(
                f"the sync's deadline passed before {what} could finish",
                hint="the network is too slow or down; sync again later, no data was lost",
            )
        return min(self.timeout, left)

    def _opts(self) -> dict[str, Any]:
        """Per-call options: no retry inside the client (``_call`` retries), and a timeout
        that also respects the sync's deadline. ``retry`` must be a real Retry object:
        the client's stream-resume path calls ``retry._predicate`` on a broken stream."""
        return {"retry": _NO_RETRY, "timeout": self._remaining("a call")}

    def _redial_if_unreachable(self) -> None:
        """After a call found Firestore unreachable, dial a fresh channel: the client's
        own may sit in gRPC's reconnect backoff after the network is back."""
        if self._unreachable and redial(self.client):
            log.info("Firestore was unreachable: dialing a fresh channel")
        self._unreachable = False

    def _call(self, what: str, fn: Callable[[], T], *, conditional: bool = False) -> T:
        """Run one remote call: the one place Firestore's exceptions become replicator's.

        Unreachable or busy: retried with backoff (within the deadline), then
        ``OfflineError``/``TransientError``. A failed precondition of a
        ``conditional`` write: ``PreconditionFailed``; of anything else (a read
        wanting an index that is not deployed, a missing database):
        ``RemoteError``, as is a refusal (credentials, rules, a bad request).
        """
        delay = 0.1
        for attempt in range(1, self.attempts + 1):
            self._remaining(what)
            self._redial_if_unreachable()
            try:
                return fn()
            except (*OFFLINE_ERRORS, *TRANSIENT_ERRORS) as exc:
                self._unreachable = isinstance(exc, OFFLINE_ERRORS)
                if attempt == self.attempts:
                    if isinstance(exc, OFFLINE_ERRORS):
                        raise OfflineError(
                            f"Firestore did not answer {what} after {attempt} attempts", orig=exc
                        ) from exc
                    raise TransientError(
                        f"Firestore kept failing {what} ({type(exc).__name__})", orig=exc
                    ) from exc
                self.retries += 1
                pause = delay * (0.5 + random.random())
                if self._deadline is not None:
                    pause = min(pause, max(0.0, self._deadline - time.monotonic()))
                log.warning(
                    "Firestore failed %s (%s), attempt %d of %d: retrying in %.2f s",
                    what,
                    type(exc).__name__,
                    attempt,
                    self.attempts,
                    pause,
                )
                time.sleep(pause)
                delay = min(delay * 2, 2.0)
            except _PRECONDITION as exc:
                if conditional:
                    raise PreconditionFailed(
                        f"a document changed remotely since it was read ({what})", orig=exc
                    ) from exc
                raise RemoteError(
                    f"Firestore refused {what}: {exc.message}",
                    hint="deploy firestore.indexes.json if an index is missing,"
                    " and check that the project's database exists",
                    orig=exc,
                ) from exc
            except _REFUSED as exc:
                raise RemoteError(
                    f"Firestore refused {what}: {exc.message}",
                    hint="check the credentials, the project and the security rules",
                    orig=exc,
                ) from exc
            except gexc.GoogleAPICallError as exc:
                raise TransientError(f"Firestore failed {what}: {exc}", orig=exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _doc(self, collection: str, snap: Any) -> RemoteDoc:
        data = snap.to_dict() or {}
        changed = data.pop(CHANGED_AT, None)
        deleted = data.pop(DELETED, False)
        problem = None
        if not isinstance(deleted, bool):
            problem, deleted = f"{DELETED} holds a {type(deleted).__name__}, not a bool", False
        if isinstance(changed, _dt.datetime):
            cursor = _ts(changed) + "|" + snap.id
        else:
            cursor = ""
            problem = f"{CHANGED_AT} holds a {type(changed).__name__}, not a server timestamp"
        self.usage.bytes_read += value_size(data) + len(snap.id)
        version = _ts(snap.update_time)
        return RemoteDoc(collection, snap.id, data, deleted, version, cursor, problem=problem)

    def document_size(self, write: Write) -> int:
        name = len(f"{self.root}/{write.collection}/{write.id}".encode()) + 16
        return name + value_size(dict(write.data)) + 32 + 2 * 9  # + deleted, changedAt

    def _document_name(self, collection: str, doc_id: str, prefixes: dict[str, str]) -> str:
        """The full resource name of a document (``prefixes`` caches each collection's)."""
        if not names_a_document(doc_id):  # the upload refuses more, earlier (is_row_id)
            problem = f"{doc_id!r:.60} cannot name a Firestore document"
            hint = f"give the row another id (a row id is {ROW_ID_RULE})"
            raise UnsupportedValueError("id", problem, collection, doc_id[:60], hint=hint)
        prefix = prefixes.get(collection)
        if prefix is None:
            path = self._collection(collection).document("-")._document_path
            prefix = prefixes[collection] = path[:-1]
        return prefix + doc_id

    # -- RemoteStore --------------------------------------------------------------------

    def pull(
        self,
        collection: str,
        after: str | None,
        limit: int,
        exclude_by: str | None = None,
        catch_up: bool = False,
    ) -> Page:
        ref = self._collection(collection)
        query = self._filtered(collection).order_by(CHANGED_AT).order_by("__name__")
        if after:
            stamp, _, name = after.partition("|")
            when = _parse_ts(stamp)
            if catch_up:
                query = query.where(
                    filter=firestore.FieldFilter(CHANGED_AT, ">=", when - self.settle)
                )
            else:
                query = query.start_after({CHANGED_AT: when, "__name__": ref.document(name)})
        query = query.limit(limit)
        snaps = self._call(
            f"a query of {collection}",
            lambda: list(query.stream(**self._opts())),
        )
        self.usage.reads += max(1, len(snaps))
        docs = [self._doc(collection, s) for s in snaps]
        cursor = after
        # a document whose change time is damaged has no cursor: page on by the others
        last = next((d.cursor for d in reversed(docs) if d.cursor), None)
        if last is not None:
            cursor = last if after is None or last > after else after
        kept = [d for d in docs if exclude_by is None or d.updated_by != exclude_by]
        return Page(kept, cursor, len(snaps) == limit)

    def count_after(self, collection: str, after: str | None) -> int:
        """Changes of ``collection`` at or after the cursor's time (see ``Countable``): one
        aggregation query, billed one read per 1,000 documents counted."""
        query: Any = self._filtered(collection)
        if after:
            when = _parse_ts(after.partition("|")[0])
            query = query.where(filter=firestore.FieldFilter(CHANGED_AT, ">=", when))
        result = self._call(f"a count of {collection}", lambda: query.count().get(**self._opts()))
        n = int(result[0][0].value)
        self.usage.reads += max(1, -(-n // 1000))
        return n

    def get(self, collection: str, ids: Sequence[str]) -> dict[str, RemoteDoc]:
        ref = self._collection(collection)
        found: dict[str, RemoteDoc] = {}
        for i in range(0, len(ids), 300):
            refs = [ref.document(doc_id) for doc_id in ids[i : i + 300]]

            def read(refs: list[Any] = refs) -> list[Any]:
                return list(self.client.get_all(refs, **self._opts()))

            snaps = self._call(f"a read of {collection}", read)
            self.usage.reads += max(1, len(refs))
            for snap in snaps:
                if snap.exists:
                    found[snap.id] = self._doc(collection, snap)
        return found

    def _device_fields(self, device: DeviceRecord) -> dict[str, Any]:
        return {
            "installationId": device.installation_id,
            "name": device.name,
            "platform": device.platform,
            "appVersion": device.app_version,
            "watermarks": dict(device.watermarks),
            "lastSync": firestore.SERVER_TIMESTAMP,
            "snapshotGeneration": device.snapshot_generation,
        }

    def push(self, writes: Sequence[Write], device: DeviceRecord) -> PushResult:
        if len(writes) + 1 > self.max_batch_writes:
            raise ConfigurationError(
                f"a batch holds at most {self.max_batch_writes - 1} writes plus the device record"
            )
        batch = self.client.batch()
        size = 0
        prefixes: dict[str, str] = {}
        for w in writes:
            size += w.size if w.size is not None else value_size(dict(w.data))
            if w.unconditional:  # a delete's tombstone: merged into what the document holds
                ref = self._collection(w.collection).document(w.id)
                data = {**w.data, DELETED: w.deleted, CHANGED_AT: firestore.SERVER_TIMESTAMP}
                batch.set(ref, data, merge=True)
                continue
            since = None if w.base_version is None else _parse_ts(w.base_version)
            pb = document_write(
                self._document_name(w.collection, w.id, prefixes),
                {**w.data, DELETED: w.deleted},
                CHANGED_AT,
                update_time=since,
            )
            batch._add_write_pbs([pb])
        device_ref = self._collection(DEVICES).document(device.installation_id)
        fields = self._device_fields(device)
        fields["lastUpload"] = firestore.SERVER_TIMESTAMP
        batch.set(device_ref, fields, merge=True)
        results = self._call("a commit", lambda: batch.commit(**self._opts()), conditional=True)
        self.usage.writes += len(writes) + 1
        self.usage.bytes_written += size
        versions = {w.key: _ts(r.update_time) for w, r in zip(writes, results, strict=False)}
        return PushResult(
            versions, _commit_stamp(results[-1]), _parse_ts(_ts(results[-1].update_time))
        )

    def register(self, device: DeviceRecord) -> _dt.datetime | None:
        ref = self._collection(DEVICES).document(device.installation_id)
        result = self._call(
            "a device registration",
            lambda: ref.set(self._device_fields(device), merge=True, **self._opts()),
        )
        self.usage.writes += 1
        stamp = getattr(result, "update_time", None)
        return _parse_ts(_ts(stamp)) if isinstance(stamp, _dt.datetime) else None

    def uploads_after(self, position: str | None, exclude: str) -> str | None:
        """One query: device records whose lastUpload is within ``settle`` before, or after,
        the position. The position token carries the uploads already seen in that
        window, so a late-visible upload is never missed and a seen one never repeats."""
        base: _dt.datetime | None = None
        seen: set[str] = set()
        if position:
            stamp, *pairs = position.split(";")
            base = _parse_ts(stamp)
            seen = set(pairs)
        query = self._collection(DEVICES)
        if base is not None:
            query = query.where(
                filter=firestore.FieldFilter("lastUpload", ">=", base - self.settle)
            )
        else:
            query = query.where(
                filter=firestore.FieldFilter(
                    "lastUpload", ">", _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
                )
            )
        snaps = self._call(
            "the Devices check",
            lambda: list(query.select(["lastUpload"]).stream(**self._opts())),
        )
        self.usage.reads += max(1, len(snaps))
        uploads = {
            f"{s.id}={_ts(s.get('lastUpload'))}": s.get("lastUpload")
            for s in snaps
            if s.id != exclude and isinstance(s.get("lastUpload"), _dt.datetime)
        }
        fresh = [k for k in uploads if k not in seen]
        if not fresh:
            return None
        top = max(uploads.values())
        if base is not None and base > top:
            top = base
        window = [k for k, v in uploads.items() if v >= top - self.settle]
        return ";".join([_ts(top), *sorted(window)])

    def devices(self) -> list[DeviceRecord]:
        snaps = self._call(
            "a read of the Devices collection",
            lambda: list(self._collection(DEVICES).stream(**self._opts())),
        )
        self.usage.reads += max(1, len(snaps))
        out = []
        for s in sorted(snaps, key=lambda s: s.id):
            d = s.to_dict() or {}
            last_sync, last_upload = d.get("lastSync"), d.get("lastUpload")
            out.append(
                DeviceRecord.from_stored(
                    s.id,
                    d,
                    last_sync=_ts(last_sync) if isinstance(last_sync, _dt.datetime) else None,
                    last_upload=_ts(last_upload) if isinstance(last_upload, _dt.datetime) else None,
                )
            )
        return out

    # -- Compactable ---------------------------------------------------------------------

    def purge_tombstones(self, collection: str, before: _dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` tombstones older than ``before``. The horizon document
        is raised first, in a transaction, so a crash between the two steps can only
        make a device reconcile needlessly, never miss a delete. Each delete is
        conditional on the tombstone's version (a row restored meanwhile stays).

        Production needs the composite index ``(deleted, changedAt)`` of
        ``firestore.indexes.json``."""
        query = (
            self._filtered(collection)
            .where(filter=firestore.FieldFilter(DELETED, "==", True))
            .where(filter=firestore.FieldFilter(CHANGED_AT, "<", before))
            .order_by(CHANGED_AT)
            .limit(limit)
        )
        snaps = self._call(
            f"a query of {collection}'s old tombstones", lambda: list(query.stream(**self._opts()))
        )
        self.usage.reads += max(1, len(snaps))
        docs = [(s, self._doc(collection, s)) for s in snaps]
        cursors = [d.cursor for _, d in docs if d.cursor]
        if not cursors:
            return 0
        self._raise_horizon(collection, max(cursors))
        batch = self.client.batch()
        for snap, _ in docs:
            batch.delete(
                snap.reference, option=self.client.write_option(last_update_time=snap.update_time)
            )
        try:
            self._call(
                "a purge of tombstones", lambda: batch.commit(**self._opts()), conditional=True
            )
        except PreconditionFailed:
            return 0  # one was rewritten meanwhile: the next pass reads them again
        self.usage.writes += len(docs)
        return len(docs)

    def _raise_horizon(self, collection: str, cursor: str) -> None:
        ref = self._collection(META).document(HORIZONS)

        @firestore.transactional
        def raise_it(tx: Any) -> None:
            snap = ref.get(transaction=tx)
            held = (snap.to_dict() or {}).get(HORIZONS) if snap.exists else None
            marks = dict(held) if isinstance(held, Mapping) else {}
            current = marks.get(collection)
            if isinstance(current, str) and current >= cursor:
                return
            marks[collection] = cursor
            tx.set(ref, {HORIZONS: marks})

        self._call("raising the tombstone horizon", lambda: raise_it(self.client.transaction()))
        self.usage.reads += 1
        self.usage.writes += 1

    def horizons(self) -> dict[str, str]:
        ref = self._collection(META).document(HORIZONS)
        snap = self._call("the tombstone horizons", lambda: ref.get(**self._opts()))
        self.usage.reads += 1
        held = (snap.to_dict() or {}).get(HORIZONS) if snap.exists else None
        if not isinstance(held, Mapping):
            return {}
        return {str(k): v for k, v in held.items() if isinstance(v, str)}

    def collections(self) -> list[str]:
        parent = self.client.document(self.root) if self.root else self.client
        refs = self._call("a listing of collections", lambda: list(parent.collections()))
        self.usage.reads += 1
        return sorted(r.id for r in refs if r.id not in (DEVICES, META))

    # -- inspection (tests, CLI) ---------------------------------------------------------

    def all_docs(self, collection: str) -> dict[str, RemoteDoc]:
        """Every document of ``collection``, tombstones included (not counted as usage)."""
        before = self.usage.copy()
        snaps = self._call(
            f"a read of {collection}",
            lambda: list(self._collection(collection).stream(**self._opts())),
        )
        docs = {s.id: self._doc(collection, s) for s in snaps}
        self.usage = before
        return docs


def _commit_stamp(result: Any) -> str:
    """The server timestamp a commit gave its transforms (else its update time)."""
    stamps = []
    for value in getattr(result, "transform_results", None) or []:
        stamp = getattr(value, "timestamp_value", None)
        if isinstance(stamp, _dt.datetime):
            stamps.append(stamp)
    return _ts(max(stamps)) if stamps else _ts(result.update_time)


# the protocols this store implements, checked by mypy
_is_remotestore: type[RemoteStore] = FirestoreRemote
_is_deadlined: type[Deadlined] = FirestoreRemote
_is_sizeddocuments: type[SizedDocuments] = FirestoreRemote
_is_nativetypes: type[NativeTypes] = FirestoreRemote
_is_countable: type[Countable] = FirestoreRemote
_is_compactable: type[Compactable] = FirestoreRemote
