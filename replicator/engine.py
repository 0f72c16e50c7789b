"""Replicator: the sync, told phase by phase.

``sync()`` runs, in order:

1. **register** first, when this device has never measured its clock against
   the store's (its first contact), so no timestamp of it is compared or
   uploaded before (``sync/register.py``);
2. **download** what other devices uploaded (``sync/download.py``);
3. **upload** this device's dirty rows and deletes (``sync/upload.py``);
4. **bundles**: the upload-only collections' rows go up as checksummed
   bundles, when configured (``bundles/send.py``);
5. **register** the device in the Devices collection (inside the upload's
   last batch when there was one, else a write of its own when the device is
   not registered yet or others had uploaded, so its watermarks moved);
6. **retention**: forget acknowledged deletes older than the retention, and
   purge such tombstones remotely now and then (``sync/retention.py``); a
   failure is reported, not raised;
7. **snapshot**, when blob storage is configured (``snapshots/publish.py``):
   ask whether a publish may be due (nothing unsynced, the manifest read);
   if so and this device uploaded, a **catch-up download** moves the cursors
   past its own uploads; then **publish** if the strategy says so, and
   **register** again, so the Devices collection learns the generation
   published; a failure of any of these is reported, not raised.

An error in any phase leaves the local database consistent: pages of
downloaded changes are applied with their cursor in one transaction, and rows
are marked clean only after the remote confirmed them, so the next sync just
picks up where this one stopped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import peewee

from .bundles.send import Bundles, BundleTally, send
from .capture import check_tables, install_capture
from .checks import check_settings, enforce_foreign_keys, one_way
from .codec import missing_value
from .continuous import Continuous
from .denied_writes import DeniedWrites
from .errors import (
    ConfigurationError,
    RemoteError,
    ReplicatorError,
    SnapshotError,
    SnapshotNotFoundError,
)
from .local import LocalState
from .model import (
    SyncModel,
    check_models,
    collection_name,
    data_columns,
    sort_models,
)
from .reference.data import guard_download_only
from .report import Phase, Progress, Resolution, SyncReport, Tally
from .snapshots.crypto import SnapshotSecret
from .snapshots.files import clean_leftovers
from .snapshots.manifest import Manifest, read_manifest
from .snapshots.publish import byte_counter, publish_due, snapshot_due
from .snapshots.restore import database_file
from .snapshots.restore import prepare as prepare_restore
from .sql import local_error, on_local_database
from .stores.base import BlobStore, Deadlined, RemoteStore, Sessions, keeps_native_types
from .strategies.conflict import ConflictStrategy, LastWriterWins, Resolver, resolver
from .strategies.snapshot import BigBrother, SnapshotStrategy, checked
from .sync.context import SyncContext
from .sync.download import download
from .sync.listeners import Change, install
from .sync.register import register
from .sync.retention import DEFAULT_RETENTION, maintain
from .sync.turns import Turns
from .sync.upgrade import adopt_new_columns
from .sync.upload import upload

log = logging.getLogger(__name__)


class Replicator(Continuous, DeniedWrites):
    """Keeps a peewee SQLite database in sync with a remote store.

    ``models`` are the synced ``SyncModel`` classes (order does not matter;
    parents are synced before children from their foreign keys). Creating a
    Replicator creates missing tables and installs change capture; it is cheap
    and safe to do at every start of the app.
    """

    def __init__(
        self,
        database: peewee.SqliteDatabase,
        models: Sequence[type[SyncModel]],
        remote: RemoteStore,
        blobs: BlobStore | None = None,
        key: SnapshotSecret | None = None,
        *,
        snapshot_strategy: SnapshotStrategy | None = None,
        conflict_strategy: ConflictStrategy | Resolver | None = None,
        device_name: str | None = None,
        app_version: str = "",
        page_size: int = 500,
        on_progress: Callable[[Progress], None] | None = None,
        on_conflict: Callable[[Resolution], None] | None = None,
        on_change: Callable[[Change], None] | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
        tombstone_retention: _dt.timedelta | None = DEFAULT_RETENTION,
        bundles: Bundles | None = None,
        download_only: Sequence[type[SyncModel]] = (),
        parallel_downloads: int = 4,
    ) -> None:
        check_settings(models, page_size, tombstone_retention, parallel_downloads)
        if blobs is not None and key is None:
            raise ConfigurationError(
                "snapshots need a key",
                hint="pass key=SnapshotKey(...) or key=Passphrase('...') with blobs=",
            )
        check_models(models)
        #: groups of collections with no foreign-key path between them pulled at once
        self.parallel_downloads = parallel_downloads
        #: how upload-only collections go up (``bundles/send.py``), or None
        self.bundles = bundles
        #: collections that go up as bundles only, and those this device only downloads
        #: (local writes to them are refused)
        self.upload_only, self.download_only = one_way(models, bundles, download_only)
        self.database = database
        self.models = sort_models(models)
        self.remote = remote
        self.blobs = blobs
        self.key = key
        self.snapshot_strategy = checked(snapshot_strategy or BigBrother())
        self.conflict_strategy = conflict_strategy or LastWriterWins()
        resolver(self.conflict_strategy)  # a wrong one fails now, not at the first conflict
        self.app_version = app_version
        self.page_size = page_size
        #: how long deletes are remembered, locally and remotely (``sync/retention.py``)
        self.tombstone_retention = tombstone_retention
        self.on_progress = on_progress
        self.on_conflict = on_conflict
        #: told which rows each committed step of a sync changed (``subscribe``)
        self._listeners: list[Callable[[Change], None]] = [on_change] if on_change else []
        #: the device clock (aware UTC); its offset from the store's is measured each upload
        self.clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))
        #: one sync (or restore) at a time, none from inside its own, async calls
        #: waiting without a thread (``sync/turns.py``)
        self._turns = Turns()
        self.local = self._open(device_name)

    @on_local_database("could not be opened")
    def _open(self, device_name: str | None) -> LocalState:
        """Open replicator's tables and the synced ones, ready to sync."""
        check_tables(self.database, self.models)  # before anything is written
        enforce_foreign_keys(self.database, self.models)
        local = LocalState(self.database, device_name=device_name)
        if self.blobs is not None:
            # what a publish or restore killed part-way left beside the database
            # (plaintext copies included) goes now
            with contextlib.suppress(ConfigurationError, OSError):
                clean_leftovers(database_file(self.database))
        self.local = local
        self._prepare_schema()
        self._open_status()  # status, on_status, statuses, start, stop (continuous.py)
        return local

    def _prepare_schema(self) -> None:
        """Create missing tables and columns, install change capture, adopt new columns."""
        with self.database.atomic():
            install_capture(self.database, self.models)  # type: ignore[arg-type]
            guard_download_only(self.database, self.collections, self.download_only)
            native = keeps_native_types(self.remote)
            adopt_new_columns(self.local, self.models, native=native)
            for model in self.models:  # a database of the earlier layout moves to this one
                self.local.trim_bases(collection_name(model))

    def bound(self) -> Any:
        """Context manager binding the models to this database (several databases, one process)."""
        return self.database.bind_ctx(self.models)

    @property
    def installation_id(self) -> str:
        """This device's id in the Devices collection: made once per database, new after
        a restore (``replicator devices`` lists them; device tokens are keyed by it)."""
        return self.local.installation_id

    @property
    def collections(self) -> list[str]:
        """The remote names of the synced tables (a table's name in SQLite)."""
        return [collection_name(m) for m in self.models]

    @on_local_database("could not be read")
    def dirty_counts(self) -> dict[str, int]:
        """Rows and deletes waiting for upload, per collection."""
        return self.local.pending_counts(self.collections)

    @on_local_database("could not be read")
    def pending_count(self) -> int:
        """How many rows and deletes wait for upload, all collections together (one
        indexed count per collection: cheap enough for a badge refreshed often)."""
        return self.local.pending_total(self.collections)

    @on_local_database("could not be read")
    def is_pending(self, model: type[SyncModel] | str, row_id: str) -> bool:
        """Whether the row ``row_id`` of ``model`` (or of that collection) has changes, or
        a delete, not uploaded yet."""
        coll = model if isinstance(model, str) else collection_name(model)
        if coll not in self.collections:
            raise ConfigurationError(
                f"{coll!r} is not one of this Replicator's collections",
                hint=f"one of: {', '.join(self.collections)}",
            )
        return self.local.is_pending(coll, row_id)

    def sync(self, *, timeout: float | None = None) -> SyncReport:
        """Download, upload, register. Raises a ``ReplicatorError`` on failure.

        ``timeout`` (seconds) is one deadline for the whole sync's remote calls,
        on stores that support it (``Deadlined``): past it, the sync stops with
        ``OfflineError``, having lost nothing, instead of waiting out each call's
        own timeout and retries.

        Syncs of one device take turns: called while another thread syncs it, this
        waits for that sync to end. Called from inside this device's own sync (a
        listener, ``on_progress``, ``on_conflict``, the conflict strategy), it raises
        ``ConfigurationError`` rather than wait for itself for ever.
        """
        self._turns.refuse_inside("sync()")
        if self.database.in_transaction():
            raise ConfigurationError(
                "sync() cannot run inside a transaction",
                hint="commit or leave the atomic() block first",
            )
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"timeout must be positive, got {timeout}")
        store = self.remote if timeout is not None and isinstance(self.remote, Deadlined) else None
        # one connection (or channel) for the whole sync, where the store can keep one
        session = (
            self.remote.session() if isinstance(self.remote, Sessions) else contextlib.nullcontext()
        )
        with self._turns.hold("sync()"), session, self._board.syncing():
            if store is not None and timeout is not None:
                store.set_deadline(time.monotonic() + timeout)
            started = time.perf_counter()
            try:
                report = self._sync()
            except peewee.DatabaseError as exc:
                error = local_error("the local database refused the sync", exc)
                _log_failure(error)
                raise error from exc
            except ReplicatorError as exc:
                _log_failure(exc)
                raise
            finally:
                if store is not None:
                    store.set_deadline(None)
        log.info(
            "sync of %s: %s; %.3f s",
            self.local.device_name,
            report.summary(),
            time.perf_counter() - started,
        )
        return report

    async def sync_async(self, *, timeout: float | None = None) -> SyncReport:
        """:meth:`sync` for an asyncio app: the blocking work runs in a worker thread, so
        the event loop keeps running. Overlapping calls wait their turn, without holding
        a thread while they wait.

        Cancelling the awaiting task stops the waiting, not the sync: a thread cannot
        be interrupted, so a sync already started goes on in its worker thread to its
        end (committing what it commits, as any sync; nothing is lost), and its report
        or error is dropped. A call made after that waits for it to end, here too
        without holding a thread. To bound how long a sync may wait on the network,
        pass ``timeout``.
        """
        self._check_file("sync_async()")
        return await self._turns.in_worker(functools.partial(self.sync, timeout=timeout))

    async def login_async(self) -> SyncReport:
        """:meth:`login` off the event loop, as :meth:`sync_async`."""
        self._check_file("login_async()")
        return await self._turns.in_worker(self.login)

    def _check_file(self, what: str) -> None:
        name = str(self.database.database)
        if name == ":memory:" or "mode=memory" in name:
            # the worker thread's connection would open another, empty, database
            raise ConfigurationError(
                f"{what} needs a database file: an in-memory database is private"
                " to the connection, and so to the thread, that opened it",
                hint="open the SqliteDatabase on a path, or call sync() from the loop's"
                " own executor",
            )

    def _sync(self) -> SyncReport:
        started = _dt.datetime.now(_dt.timezone.utc)
        before = self.remote.usage.copy()
        ctx = self._context()
        registered = False
        if self.local.clock_offset is None:
            # first contact: learn how this device's clock stands against the store's
            # before any timestamp of it is compared or uploaded
            register(ctx)
            registered = True
        down = download(ctx)
        up = upload(ctx)
        bundled = send(ctx, self.bundles) if self.bundles is not None else BundleTally()
        if bundled.bundled or bundled.refused:  # the service took a bundle: an upload too
            self.local.record_upload()
        registered = registered or up.pushed is not None
        if up.pushed is None and (down.others or not self.local.registered):
            register(ctx)
            registered = True
        tally = Tally()
        tally.fold(down.tally)
        tally.fold(up.tally)
        tally.rejected += bundled.held  # rows whose parent is not on the remote yet
        purged, purge_error = self._maintain(ctx)
        self.local.count_changes(sum(bundled.bundled.values()))  # they are in a snapshot too
        snapshot, snapshot_error = self._publish(ctx, tally, uploaded=up.pushed is not None)
        ctx.changed("download")  # anything a step told no one yet (an app upgrade's fill)
        finished = _dt.datetime.now(_dt.timezone.utc)
        self.local.record_rejected(  # one write for both: an idle sync commits once
            [(r.collection, r.id, f"{type(r.error).__name__}: {r.error}") for r in tally.rejected],
            last_sync=finished.isoformat(timespec="seconds"),
        )
        return tally.report(
            installation_id=ctx.me,
            started_at=started,
            finished_at=finished,
            idle=not down.others
            and up.pushed is None
            and not registered
            and not (bundled.bundled or bundled.rejected or bundled.waiting),
            bundled=bundled.bundled,
            refused=bundled.refused,
            bundles_rejected=tuple(bundled.rejected),
            bundles_waiting=bundled.waiting,
            usage=self.remote.usage.minus(before),
            registered=registered,
            snapshot=snapshot,
            snapshot_error=snapshot_error,
            purged=purged,
            purge_error=purge_error,
        )

    def subscribe(self, listener: Callable[[Change], None]) -> Callable[[], None]:
        """Tell ``listener`` which rows each committed step of every later sync
        changed (a :class:`~replicator.sync.listeners.Change` per collection: after each
        downloaded page, each upload batch, each conflict resolved). Returns a
        function that unsubscribes. Listeners run on the syncing thread, after the
        commit; one that raises is logged and skipped."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _context(self) -> SyncContext:
        listeners = tuple(self._turns.guard(f) for f in self._listeners)
        if listeners:
            install(
                self.database.execute_sql,
                {m._meta.table_name: data_columns(m) for m in self.models},
            )
        return SyncContext(
            listeners=listeners,
            db=self.database,
            local=self.local,
            remote=self.remote,
            models=self.models,
            strategy=self.conflict_strategy,
            me=self.local.installation_id,
            page_size=self.page_size,
            app_version=self.app_version,
            on_progress=self._turns.guard(self._told),
            on_conflict=None if self.on_conflict is None else self._turns.guard(self.on_conflict),
            clock=self.clock,
            upload_only=self.upload_only,
            download_only=self.download_only,
            parallel_downloads=self.parallel_downloads,
        )

    def refused(self, model: type[SyncModel]) -> list[tuple[str, str]]:
        """(id, reason) of the rows of an upload-only ``model`` the ingest service refused;
        such a row is sent again once the app changes it."""
        return [(i, reason) for i, reason, _ in self.local.refused(collection_name(model))]

    def _maintain(self, ctx: SyncContext) -> tuple[dict[str, int], RemoteError | None]:
        """Retention's share of a sync; a failure is reported, not raised: the data is
        synced by then, and the purge is tried again at the next sync."""
        try:
            return maintain(ctx, self.tombstone_retention), None
        except RemoteError as exc:
            log.warning("old tombstones not purged: %s (tried again next sync)", type(exc).__name__)
            return {}, exc

    def _publish(
        self, ctx: SyncContext, tally: Tally, *, uploaded: bool
    ) -> tuple[str | None, ReplicatorError | None]:
        """Publish a snapshot if due; a failure is reported, not raised (the data is
        synced by then; only the snapshot is missing).

        Between the phase's two steps, a device that uploaded downloads its own
        uploads back (so the snapshot's cursors are past them); after a publish,
        it registers (so every device can tell a rolled-back manifest). What the
        catch-up applied joins ``tally`` once the whole phase succeeded.
        """
        if self.blobs is None or self.key is None:
            return None, None
        self.local.count_changes(tally.total())
        db_path = database_file(self.database)
        caught_up = Tally()
        try:
            due = snapshot_due(
                ctx,
                blobs=self.blobs,
                key=self.key,
                strategy=self.snapshot_strategy,
                tables=self.collections,
            )
            if due is None:
                return None, None
            if uploaded:
                caught_up = download(ctx, catch_up_only=True).tally
            published = publish_due(
                ctx,
                due,
                blobs=self.blobs,
                key=self.key,
                strategy=self.snapshot_strategy,
                db_path=db_path,
                tables=self.collections,
            )
            if published is not None:
                register(ctx)
        except (SnapshotError, RemoteError, ConfigurationError) as exc:
            # ConfigurationError: a blob store set up wrong (S3 without credentials)
            log.warning("no snapshot published: %s", type(exc).__name__)
            return None, exc
        tally.fold(caught_up)
        return None if published is None else published.snapshot_id, None

    @on_local_database("could not be read")
    def is_empty(self) -> bool:
        """True if no synced table holds a row and nothing was ever downloaded."""
        if self.local.trackers() or self.local.count_pending_tombstones():
            return False
        for model in self.models:
            row = self.database.execute_sql(
                f'SELECT 1 FROM "{collection_name(model)}" LIMIT 1'
            ).fetchone()
            if row:
                return False
        return True

    def latest_snapshot(self) -> Manifest | None:
        """The blob store's manifest: which snapshot is latest and what it covers."""
        if self.blobs is None:
            raise ConfigurationError("no blob store configured", hint="pass blobs= and key=")
        return read_manifest(self.blobs)

    @on_local_database("refused the restore")
    def restore(self, *, force: bool = False, snapshot_id: str | None = None) -> str:
        """Replace the synced tables with the latest snapshot (or ``snapshot_id``, an
        older one the manifest keeps); return its id.

        Refuses (``UnsafeRestoreError``) when the database holds unsynced
        changes, and, unless ``force``, when it holds any synced data. The
        snapshot is downloaded, authenticated and checked into a temporary file
        first; then the synced tables and replicator's metadata are replaced in
        one transaction. Tables the app keeps for itself are never touched.
        The restored database gets a new installation id.
        """
        if self.blobs is None or self.key is None:
            raise ConfigurationError("no blob store configured", hint="pass blobs= and key=")
        with self._turns.hold("restore()"), self._board.restoring():
            job = prepare_restore(
                self.database,
                self.blobs,
                self.key,
                force=force,
                tables=self.collections,
                devices=self.remote.devices(),
                snapshot_id=snapshot_id,
            )
            self.local = job.run(
                device_name=self.local.device_name,
                defaults={
                    collection_name(m): {
                        f.column_name: missing_value(f) for f in m._meta.sorted_fields
                    }
                    for m in self.models
                },
                on_bytes=byte_counter(
                    self._turns.guard(self.progress), "restore", job.manifest.size
                ),
            )
            self._prepare_schema()
            return job.manifest.snapshot_id

    @on_local_database("refused the login")
    def login(self) -> SyncReport:
        """Start a session on this device: restore the latest snapshot if the
        database is empty, then sync (downloading only what the snapshot lacks)."""
        self._turns.refuse_inside("login()")
        restored = None
        if self.blobs is not None and self.is_empty():
            try:
                restored = self.restore()
            except SnapshotNotFoundError:
                restored = None  # the first device: nothing to restore
        report = self.sync()
        return attrs.evolve(report, restored=restored)

    def progress(
        self, phase: Phase, collection: str | None, done: int, total: int | None = None
    ) -> None:
        self._told(Progress(phase, collection, done, total))


def _log_failure(exc: ReplicatorError) -> None:
    # the kind of failure only: an error's message may quote a remote value
    log.warning("sync failed: %s (retryable: %s)", type(exc).__name__, exc.retryable)
