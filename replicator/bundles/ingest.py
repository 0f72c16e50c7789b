"""The service side of bundle uploads: verify a bundle, then apply it.

An :class:`Ingestor` takes ingest requests two ways: over HTTP
(:meth:`Ingestor.serve`, what ``HttpIngest`` talks to; ``service.py``) and as
documents of the remote store's ``ingest_requests`` collection (:meth:`Ingestor.poll`,
for ``StoreIngest``). Both end in the same steps:

1. **claim** the request's document with a conditional write (its version), so
   of several ingestors on the same queue exactly one works on a bundle; a claim
   is a lease: if its ingestor dies, another takes the bundle over once it expires;
2. **check the request**: a collection this service takes (its configured
   upload-only collections, or an outbox type), a device name, and a key under that
   device's own folder of the bucket (``<prefix>/<device>/``);
3. **verify**, streaming: the object's size, then its SHA-256 computed while it
   downloads, against the request; a complete gzip stream; a header naming the same
   bundle, device, collection and row count; every line JSON; no more rows than
   announced. Any failure rejects the whole bundle with the reason: nothing of it is
   applied;
4. **validate** every row against the declared model as it is read (its id, its
   columns, each value's type); a row that fails is refused with the reason, the
   others go on;
5. **apply** rows idempotently by their UUID, in batches of conditional writes, under
   the rules of ``rows.py``: a device writes only rows it created; the service stamps
   ``updatedBy`` and ``createdOn``; ``updatedOn`` is bounded by the service's clock; a
   row is written only if the store has no version of it as recent, so applying a
   bundle again, or an older bundle after a newer one, changes nothing; a row deleted
   on the service stays deleted;
6. **record** the result in the request's document: ``accepted`` (with the refused
   rows and why) or ``rejected`` (with why), and log it.

Any failure of one bundle is that bundle's rejection with a reason (a bundle that
trips a bug included): the service goes on with the others, and a bundle decided is
never taken again. Only failures that asking again can mend (the store or the bucket
unreachable, busy) leave a bundle undecided, to be taken again later.

Who asks: over HTTP, the caller's identity comes from an authenticator
(``auth.py``) and must be the device the request names; through the queue, the
remote store's own access rules say who may write a request.

Signed-in users (``users=``, a factory ``uid -> RemoteStore`` of each user's root):
a request whose caller is a user is handled by that user's ingestor
(:meth:`Ingestor.for_user`), which takes bundles only from the user's folder of the
bucket, ``users/<uid>/`` (a request's key is relative to it:
``bundles/<device>/...``), and writes rows, queue documents and results only into
that user's root. Within it, a device still writes only rows it created. A request
naming a scope (``scopes=``, ``scoped.py``) goes to that user's ingestor in the scope. Through a
user's queue (``for_user(uid).poll()``) the rules prove the user, not the device:
the ingestor takes a request only from a device registered in that root.

Applied rows are ordinary documents of the remote store, so the normal sync shows
them to every other device (a supervisor's). The ingestor writes under its own
device record, ``ingestor-<name>``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import itertools
import logging
import socket
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, cast

import peewee

from ..codec import RowCodec
from ..errors import BlobNotFoundError, ConfigurationError, PreconditionFailed, ReplicatorError
from ..model import SyncModel, collection_name, remote_columns
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
from .auth import Authenticator, Caller, is_device_name
from .events import apply_events
from .format import EVENTS, BundleReader, read_message
from .rows import OWNER, BundleRejected, RowIntake, check_header
from .scoped import ScopeAccess, ScopeRoots
from .service import IngestServer

log = logging.getLogger(__name__)

#: most rows of one bundle refused one by one; past it the whole bundle is rejected, so
#: the result (ids and reasons) always fits in one queue document
MAX_REFUSED = 2000
#: seconds before a bundle whose store or bucket failed for now is taken again (poll)
RETRY_DELAY = 30.0
#: most bytes an outbox message expands to (it is held whole while its events are read)
MAX_MESSAGE_BYTES = 32 << 20
#: most users' ingestors (and so roots of the remote store) kept open at once
MAX_USERS = 256

__all__ = ["MAX_REFUSED", "BundleRejected", "Ingestor"]


class Ingestor:
    """Verifies and applies bundles from ``blobs`` into ``store``.

    ``collections`` are the models this service takes bundles of: the campaign's
    upload-only collections (``[bundles] collections`` of the service's config), and
    only those: a request naming any other collection (a download-only one, one
    synced row by row) is rejected. Outbox messages (``BundleSink``) go to collections
    of their own (``outbox_<type>``). ``lease`` (seconds) is how long a claim holds
    before another ingestor may take the bundle over. ``max_bundle_bytes`` bounds a
    bundle, compressed and expanded; ``max_bundle_rows`` its rows, ``max_row_bytes``
    one row's line. ``max_clock_skew`` (seconds) is how far ahead of the service's
    clock a row's ``updatedOn`` may be before it is clamped. ``prefix`` is where
    bundles are (a request naming another object is rejected). ``clock`` gives seconds
    since the epoch (tests move it). ``users`` maps a signed-in user's id to the remote
    store of that user's root (``users/<uid>`` in Firestore), for requests whose caller
    is a user (:meth:`for_user`); it is called once per user while the user's ingestor
    is kept (the :data:`MAX_USERS` most recent). ``scope`` makes the roots scopes
    (``users`` then maps each user to the scope's root): a user's rows land only where
    the scope's declaration lets the user's role write them (``bundles/scoped.py``).
    ``scopes`` (a :class:`~replicator.bundles.scoped.ScopeRoots`) serves every scope
    at once: each request names its scope, whose root and kind the service looks up.
    """

    def __init__(
        self,
        blobs: BlobStore,
        store: RemoteStore,
        collections: Sequence[type[peewee.Model]],
        *,
        name: str | None = None,
        lease: float = 300.0,
        max_bundle_bytes: int = 256 << 20,
        max_bundle_rows: int = 100_000,
        max_row_bytes: int = 16 << 20,
        max_clock_skew: float = 3600.0,
        prefix: str = "bundles",
        clock: Callable[[], float] = time.time,
        users: Callable[[str], RemoteStore] | None = None,
        scope: ScopeAccess | None = None,
        scopes: ScopeRoots | None = None,
    ) -> None:
        self.blobs = blobs
        self.store, self.users, self.scope, self.scopes = store, users, scope, scopes
        #: the signed-in user, and the scope, this ingestor works for (``for_user``), or None
        self.user: str | None = None
        self.scope_id: str | None = None
        #: where this ingestor's bundle keys are, in the bucket (a user's folder)
        self.folder = ""
        self._clones: OrderedDict[tuple[str, str | None], Ingestor] = OrderedDict()
        self._clones_lock = threading.Lock()
        wrong = [m for m in collections if not (isinstance(m, type) and issubclass(m, SyncModel))]
        if wrong:
            raise ConfigurationError(
                f"{wrong[0]!r} is not a SyncModel: an ingestor takes bundles of SyncModel"
                " collections",
                hint="pass the campaign's upload-only models",
            )
        self.models = {collection_name(m): m for m in collections}
        for coll, model in self.models.items():
            if OWNER in remote_columns(model):
                raise ConfigurationError(
                    f"{coll} has a column {OWNER!r}: the ingest service keeps its own field"
                    " of that name (the device that created the row)",
                    hint="rename the column",
                )
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.max_bundle_bytes, self.max_bundle_rows = max_bundle_bytes, max_bundle_rows
        self.max_row_bytes, self.lease = max_row_bytes, lease
        self.max_clock_skew = _dt.timedelta(seconds=max_clock_skew)
        #: requests may name objects under this prefix only (``Bundles.prefix``)
        self.prefix = prefix
        self.clock = clock
        self.codec = RowCodec(native=keeps_native_types(store))
        self.device = DeviceRecord(
            installation_id=f"ingestor-{self.name}", name=self.name, platform="ingestor"
        )
        #: the queue's cursor: requests after it have not been looked at yet
        self._cursor: str | None = None
        #: requests to look at again (another ingestor holds them, or the store or the
        #: bucket failed for now) → when
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        user = f", user={self.user!r}" if self.user is not None else ""
        scope = f", scope={self.scope_id!r}" if self.scope_id is not None else ""
        return f"Ingestor({self.name!r}{user}{scope})"

    def for_user(self, uid: str) -> Ingestor:
        """The ingestor of signed-in user ``uid``: this service's collections and limits,
        working on the user's root of the remote store (``users(uid)``) and on the
        user's folder of the bucket (``users/<uid>/``, where request keys are relative
        to). ``ConfigurationError`` when this ingestor was made without ``users``."""
        if self.users is None:
            raise ConfigurationError(
                "this ingestor takes no signed-in users: it was made without users=",
                hint="pass users=<uid -> the remote store of the user's root>",
            )
        if not uid or "/" in uid or uid in (".", ".."):
            raise ConfigurationError(f"{uid[:64]!r} cannot name a user's folder and root")
        return self._clone(uid, None, self.users, self.scope)

    def _clone(
        self,
        uid: str,
        scope: str | None,
        root: Callable[[str], RemoteStore],
        access: ScopeAccess | None,
    ) -> Ingestor:
        """The (kept) ingestor of ``uid`` in ``root(uid)``, or in ``scope`` judged by
        ``access``; the :data:`MAX_USERS` most recent are kept."""
        key = (uid, scope)
        with self._clones_lock:
            if key in self._clones and self._clones[key].scope == access:
                self._clones.move_to_end(key)
                return self._clones[key]
        store = root(uid)
        clone = copy.copy(self)
        clone.store, clone.users, clone.scopes, clone.user = store, None, None, uid
        clone.scope, clone.scope_id, clone.folder = access, scope, f"users/{uid}/"
        clone.codec = RowCodec(native=keeps_native_types(store))
        clone._cursor, clone._held, clone._lock = None, {}, threading.Lock()
        clone._clones, clone._clones_lock = OrderedDict(), threading.Lock()
        with self._clones_lock:
            if key not in self._clones or self._clones[key].scope != access:
                self._clones[key] = clone
            self._clones.move_to_end(key)
            while len(self._clones) > MAX_USERS:
                self._clones.popitem(last=False)
            return self._clones[key]

    def _into_scope(self, request: IngestRequest, caller: Caller | None) -> IngestResult:
        """A request naming a scope, served by its user's ingestor in that scope; refused,
        and recorded nowhere, unless the caller may send bundles into it (``scoped.py``)."""
        scope, uid = request.scope or "", caller.user if caller is not None else None
        try:
            if self.scopes is None:
                raise BundleRejected("this service takes no bundles into scopes")
            uid, store, access = self.scopes.admit(scope, uid)
        except BundleRejected as exc:
            log.info("bundle %s into scope %.64r refused: %s", request.bundle, scope, exc)
            return IngestResult(request.bundle, "rejected", str(exc))
        return self._clone(uid, scope, lambda _: store, access).submit(request)

    # -- the two ways in -------------------------------------------------------------

    def submit(self, request: IngestRequest, caller: Caller | None = None) -> IngestResult:
        """Handle a request that arrived over HTTP: record it in the queue if it is new,
        and ingest it now unless it is decided already or another ingestor holds it.
        A ``caller`` who is a signed-in user is served by that user's ingestor
        (:meth:`for_user`): their root, their folder of the bucket; one naming a scope,
        by that user's ingestor in the scope (``scopes=``)."""
        if self.user is None and (request.scope is not None or (self.scopes and not self.users)):
            return self._into_scope(request, caller)
        if request.scope != self.scope_id:
            raise ConfigurationError(f"{self!r} serves no other scope than {self.scope_id}")
        if caller is not None and caller.user != self.user:
            if self.user is not None or caller.user is None:
                raise ConfigurationError(f"user {self.user}'s ingestor serves that user only")
            return self.for_user(caller.user).submit(request)
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
            reason = f"malformed request: {exc}"
        else:
            reason = self._unregistered(request)
        if reason:
            result = IngestResult(doc.id, "rejected", reason)
            self._record(doc.id, result)
            out.append(result)
            return
        try:
            result = self._take(doc, request)
        except ReplicatorError as exc:
            if not exc.retryable:
                raise
            # the store or the bucket failed for now: this bundle is taken again later,
            # and the ones behind it are not held up
            log.warning("bundle %s: %s; taken again in %g s", doc.id, exc, RETRY_DELAY)
            self._held[doc.id] = self.clock() + RETRY_DELAY
            return
        if result.state == "pending":  # another ingestor holds it: look again when it lapses
            until = doc.data.get("claimedUntil")
            self._held[doc.id] = until if isinstance(until, int | float) else self.clock()
        else:
            out.append(result)

    def _unregistered(self, request: IngestRequest) -> str:
        """In a user's queue, why the request's device is not one registered in that
        user's root (the rules proved who wrote the request, not which device)."""
        if request.scope is not None:
            return "a request naming a scope is taken over HTTP only"
        if self.user is None or request.device in {d.installation_id for d in self.store.devices()}:
            return ""
        return f"device {request.device[:64]!r} is not registered to user {self.user}"

    def run(self, *, poll_every: float = 2.0, stop: threading.Event | None = None) -> None:
        """Poll the queue until ``stop`` is set (each decision is logged as it is made);
        a store that cannot be reached is waited out, and nothing stops the loop but
        ``stop``: a failure is logged and the next poll goes on."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.poll()
            except ReplicatorError as exc:
                log.warning("ingest queue: %s", exc)
            except Exception:  # a bug: logged with its trace; the service goes on
                log.exception("ingest queue: the poll failed unexpectedly")
            stop.wait(poll_every)

    def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auth: Authenticator | None = None,
        **options: Any,
    ) -> IngestServer:
        """The HTTP API for ``HttpIngest`` on ``host:port`` (0: a free port): an ASGI
        application under uvicorn, running in a thread (``service.IngestServer``; close
        it, or use it as a context manager). ``auth`` maps each request to its caller
        (``SignedInCallers``: devices of signed-in users; ``DeviceTokens``: the operators'
        bearer tokens; ``FirstOf``: both); the caller must be the device the
        request names. Without ``auth`` any request is taken as coming from the device it
        names: for tests and a service reachable by trusted devices only. With
        ``SignedInCallers`` (devices of signed-in users), the ingestor must have been made
        with ``users``: each user's requests go to that user's root. ``options``:
        ``IngestServer``'s limits and timeouts."""
        from .auth import FirstOf, SignedInCallers

        parts = auth.authenticators if isinstance(auth, FirstOf) else (auth,)
        if any(isinstance(a, SignedInCallers) for a in parts) and not (self.users or self.scopes):
            raise ConfigurationError(
                "signed-in callers need an ingestor with users= (or scopes=): each user's"
                " rows go to that user's root (or to the scope a request names)",
                hint="Ingestor(..., users=lambda uid: <the remote store of users/<uid>>)",
            )
        return IngestServer(self, host, port, auth=auth, **options)

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
        """Decide on ``request`` and record the decision; any failure of the bundle is
        its rejection, except one that asking again can mend (raised: undecided)."""
        started = time.perf_counter()
        try:
            result = self._decide(request)
        except BundleRejected as exc:
            result = IngestResult(request.bundle, "rejected", str(exc))
        except ReplicatorError as exc:
            if exc.retryable:
                raise
            result = IngestResult(request.bundle, "rejected", f"{exc.message}"[:500])
        except Exception as exc:  # a bundle that trips a bug is that bundle's rejection
            log.exception("bundle %s tripped an unexpected failure", request.bundle)
            reason = f"the service could not process this bundle ({type(exc).__name__})"
            result = IngestResult(request.bundle, "rejected", reason)
        self._record(request.bundle, result)
        log.info(
            "bundle %s of %s from %s: %s%s (%d rows accepted, %d refused) in %.2f s",
            request.bundle,
            request.collection,
            request.device,
            result.state,
            f": {result.reason}" if result.reason else "",
            result.accepted,
            len(result.refused),
            time.perf_counter() - started,
        )
        return result

    def _decide(self, request: IngestRequest) -> IngestResult:
        self._check_source(request)
        if request.count > self.max_bundle_rows:
            raise BundleRejected(
                f"the bundle holds {request.count} rows, more than the {self.max_bundle_rows}"
                " this service takes in one; send smaller bundles (Bundles max_rows)"
            )
        if request.collection.startswith(EVENTS):
            accepted, refused = self._events(request)
        else:
            model = self.models.get(request.collection)
            if model is None:
                raise BundleRejected(
                    f"{request.collection[:60]!r} is not a collection this service takes"
                )
            accepted, refused = self._rows(request, model)
        reason = ""
        if len(refused) > MAX_REFUSED:  # the result must fit in one queue document
            reason = f"{len(refused)} rows refused; the first {MAX_REFUSED} are listed"
            refused = dict(itertools.islice(refused.items(), MAX_REFUSED))
        return IngestResult(request.bundle, "accepted", reason, accepted, refused)

    def _check_source(self, request: IngestRequest) -> None:
        """The request names a device, and an object in that device's own folder."""
        device = request.device
        if not is_device_name(device):
            raise BundleRejected(
                f"{device[:40]!r} is not a device name (1 to 64 printable characters, without '/')"
            )
        folder = f"{self.prefix}/{device}/"
        parts = request.key.split("/")
        if not request.key.startswith(folder) or ".." in parts or "" in parts:
            mine = f" of user {self.user}'s folder users/{self.user}/" if self.user else ""
            raise BundleRejected(
                f"bundles are taken from {self.prefix}/{mine} only, each under the folder of"
                f" the device that sends it ({folder})"
            )
        if request.size > self.max_bundle_bytes:
            raise BundleRejected(f"the bundle is larger than {self.max_bundle_bytes} bytes")

    def _now(self) -> _dt.datetime:
        """The service's clock as naive UTC."""
        return _dt.datetime.fromtimestamp(self.clock(), _dt.timezone.utc).replace(tzinfo=None)

    def _record(self, bundle: str, result: IngestResult) -> None:
        data = {**result.to_json(), "claimedBy": self.name, "decidedAt": self.clock()}
        data.pop("bundle")
        # unconditional: a result is the same whoever decides it, so a second ingestor
        # that took over an expired claim may write it again
        self.store.push([Write(QUEUE, bundle, data, unconditional=True)], self.device)

    @contextlib.contextmanager
    def _fetched(self, request: IngestRequest) -> Iterator[BinaryIO]:
        """The object the request names, checked against its size and SHA-256, as a file
        (spooled to disk past 1 MiB: memory does not grow with the bundle)."""
        with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spool:
            body = HashingWriter(spool, request.size)  # type: ignore[arg-type]
            try:
                self.blobs.get(self.folder + request.key, body)  # type: ignore[arg-type]
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
            yield cast(BinaryIO, spool)

    def _rows(
        self, request: IngestRequest, model: type[peewee.Model]
    ) -> tuple[int, dict[str, str]]:
        """Read the bundle's rows as a stream, each checked as it is read, then apply the
        valid ones; rejected whole (before anything is applied) if it is not a readable
        bundle that agrees with the request."""
        intake = RowIntake(
            model,
            device=request.device,
            now=self._now(),
            max_clock_skew=self.max_clock_skew,
            max_refused=MAX_REFUSED,
            permit=None if self.scope is None else self.scope.permit(self.store, self.user, model),
        )
        try:
            with self._fetched(request) as body:
                reader = BundleReader(
                    body, limit=self.max_bundle_bytes, max_line=self.max_row_bytes
                )
                read = 0
                try:
                    check_header(reader.header(), request, model)
                    for number, raw in reader.rows():
                        read += 1
                        if read > request.count:
                            raise BundleRejected(
                                f"the bundle holds more rows than the {request.count}"
                                " its header announces"
                            )
                        intake.take(number, raw)
                except ValueError as exc:
                    raise BundleRejected(f"not a readable bundle: {exc}") from None
            if read != request.count:
                raise BundleRejected(
                    f"the bundle holds {read} rows, its header says {request.count}"
                )
            accepted = intake.apply(self.store, self.codec, self.device)
            return accepted, intake.refused
        finally:
            intake.close()

    def _events(self, request: IngestRequest) -> tuple[int, dict[str, str]]:
        """An outbox message (``BundleSink``): its events become documents of
        ``outbox_<type>``, one per event, keyed by the message id and position, so a
        message applied again changes nothing."""
        type_ = request.collection[len(EVENTS) :]
        if not type_ or not all(c.isalnum() or c in "_-" for c in type_) or len(type_) > 100:
            raise BundleRejected(f"{type_[:40]!r} is not an outbox type name")
        limit = min(self.max_bundle_bytes, MAX_MESSAGE_BYTES)
        with self._fetched(request) as body:
            try:
                fields, events = read_message(body, limit=limit, most=request.count)
            except ValueError as exc:
                raise BundleRejected(f"not a readable outbox message: {exc}") from None
        if fields.get("msg_id") != request.bundle or fields.get("type") != type_:
            raise BundleRejected("the message names another msg_id or type than the request")
        if len(events) != request.count:
            raise BundleRejected(
                f"the message holds {len(events)} events, the request says {request.count}"
            )
        return apply_events(self.store, self.device, request, type_, events)


def _request_of(doc: RemoteDoc) -> IngestRequest:
    return IngestRequest.from_json({**doc.data, "bundle": doc.id})
