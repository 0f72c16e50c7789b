"""Replicator: the sync, told phase by phase.

``sync()`` runs, in order (seed 002):

1. **download** what other devices uploaded (``download.py``);
2. **upload** this device's dirty rows and deletes (``upload.py``);
3. **register** the device in the Devices collection (inside the upload's
   last batch when there was one, else a write of its own when the device is
   new or its watermarks moved);
4. **snapshot** the database under the snapshot strategy, when blob storage
   is configured.

An error in any phase leaves the local database consistent: pages of
downloaded changes are applied with their cursor in one transaction, and rows
are marked clean only after the remote confirmed them, so the next sync just
picks up where this one stopped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import peewee

from .codec import missing_value
from .context import SyncContext
from .download import download
from .errors import (
    ConfigurationError,
    LocalDatabaseError,
    PreconditionFailed,
    RemoteError,
    SnapshotError,
    SnapshotNotFoundError,
    UnsafeRestoreError,
)
from .local import LocalState
from .model import SyncModel, check_models, collection_name, install_capture, sort_models
from .report import Progress, Resolution, SyncReport
from .restore import install as install_snapshot
from .retention import DEFAULT_RETENTION, maintain
from .snapshot import (
    Manifest,
    check_not_rolled_back,
    clean_leftovers,
    fetch_and_decrypt,
    open_latest,
    publish,
    read_current,
    read_manifest,
    resolve_key,
    temp_beside,
)
from .stores.base import BlobStore, Deadlined, RemoteStore, Sessions
from .strategies.conflict import LastWriterWins
from .strategies.snapshot import BigBrother, SnapshotDecision
from .upgrade import adopt_new_columns
from .upload import upload


class Replicator:
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
        key: Any = None,
        *,
        snapshot_strategy: Any = None,
        conflict_strategy: Any = None,
        device_name: str | None = None,
        app_version: str = "",
        page_size: int = 500,
        on_progress: Callable[[Progress], None] | None = None,
        on_conflict: Callable[[Resolution], None] | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
        tombstone_retention: _dt.timedelta | None = DEFAULT_RETENTION,
    ) -> None:
        if not models:
            raise ConfigurationError("Replicator needs at least one model to sync")
        if page_size < 1:
            raise ConfigurationError(f"page_size must be positive, got {page_size}")
        if tombstone_retention is not None and (
            not isinstance(tombstone_retention, _dt.timedelta)
            or tombstone_retention <= _dt.timedelta(0)
        ):
            raise ConfigurationError(
                f"tombstone_retention must be a positive timedelta or None,"
                f" got {tombstone_retention!r}",
                hint="e.g. datetime.timedelta(days=90); None keeps deletes for ever",
            )
        check_models(models)
        self.database = database
        self.models = sort_models(models)
        self.remote = remote
        self.blobs = blobs
        self.key = key
        if blobs is not None and key is None:
            raise ConfigurationError(
                "snapshots need a key",
                hint="pass key=SnapshotKey(...) or key=Passphrase('...') with blobs=",
            )
        self.snapshot_strategy = snapshot_strategy or BigBrother()
        self.conflict_strategy = conflict_strategy or LastWriterWins()
        self.app_version = app_version
        self.page_size = page_size
        #: how long deletes are remembered, locally and remotely (``retention.py``)
        self.tombstone_retention = tombstone_retention
        self.on_progress = on_progress
        self.on_conflict = on_conflict
        #: the device clock (aware UTC); its offset from the store's is measured each upload
        self.clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._lock = threading.Lock()
        self.local = LocalState(database, device_name=device_name)
        if blobs is not None:
            # what a publish or restore killed part-way left beside the database
            # (plaintext copies included) goes now
            with contextlib.suppress(ConfigurationError, OSError):
                clean_leftovers(self._db_path())
        self._prepare_schema()

    def _prepare_schema(self) -> None:
        """Create missing tables and columns, install change capture, adopt new columns."""
        with self.database.atomic():
            install_capture(self.database, self.models)  # type: ignore[arg-type]
            native = bool(getattr(self.remote, "native_types", False))
            adopt_new_columns(self.local, self.models, native=native)
            for model in self.models:  # a database of the earlier layout moves to this one
                self.local.trim_bases(collection_name(model))

    def bound(self) -> Any:
        """Context manager binding the models to this database (several databases, one process)."""
        return self.database.bind_ctx(self.models)

    @property
    def installation_id(self) -> str:
        return self.local.installation_id

    @property
    def collections(self) -> list[str]:
        return [collection_name(m) for m in self.models]

    def dirty_counts(self) -> dict[str, int]:
        """Rows and deletes waiting for upload, per collection."""
        tombs = self.local.count_pending_tombstones()
        return {c: self.local.count_dirty(c) + tombs.get(c, 0) for c in self.collections}

    def sync(self, *, timeout: float | None = None) -> SyncReport:
        """Download, upload, register. Raises a ``ReplicatorError`` on failure.

        ``timeout`` (seconds) is one deadline for the whole sync's remote calls,
        on stores that support it (``Deadlined``): past it, the sync stops with
        ``OfflineError``, having lost nothing, instead of waiting out each call's
        own timeout and retries.
        """
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
        with self._lock, session:
            if store is not None and timeout is not None:
                store.set_deadline(time.monotonic() + timeout)
            try:
                return self._sync()
            except peewee.DatabaseError as exc:
                raise _local_error(exc) from exc
            finally:
                if store is not None:
                    store.set_deadline(None)

    def _sync(self) -> SyncReport:
        started = _dt.datetime.now(_dt.timezone.utc)
        before = self.remote.usage.copy()
        ctx = SyncContext(
            db=self.database,
            local=self.local,
            remote=self.remote,
            models=self.models,
            strategy=self.conflict_strategy,
            me=self.local.installation_id,
            page_size=self.page_size,
            app_version=self.app_version,
            on_progress=self.on_progress,
            on_conflict=self.on_conflict,
            clock=self.clock,
        )
        registered = False
        if self.local.clock_offset is None:
            # first contact: learn how this device's clock stands against the store's
            # before any timestamp of it is compared or uploaded
            self._register(ctx)
            registered = True
        others = download(ctx)
        pushed = upload(ctx)
        registered = registered or pushed is not None
        if pushed is None and (others or not self.local.registered):
            self._register(ctx)
            registered = True
        purged: dict[str, int] = {}
        purge_error: RemoteError | None = None
        try:
            purged = maintain(ctx, self.tombstone_retention)
        except RemoteError as exc:  # maintenance only: the data is synced; retried next sync
            purge_error = exc
        snapshot = snapshot_error = None
        if self.blobs is not None:
            self.local.count_changes(ctx.counts.total())
            try:
                snapshot = self._snapshot_phase(ctx, uploaded=pushed is not None)
            except (SnapshotError, RemoteError) as exc:
                snapshot_error = exc  # the data is synced; only the snapshot is missing
        finished = _dt.datetime.now(_dt.timezone.utc)
        self.local.set_device(last_sync=finished.isoformat(timespec="seconds"))
        return SyncReport(
            installation_id=ctx.me,
            started_at=started,
            finished_at=finished,
            idle=not others and pushed is None and not registered,
            downloaded=dict(ctx.counts.downloaded),
            deleted=dict(ctx.counts.deleted),
            uploaded=dict(ctx.counts.uploaded),
            uploaded_deletes=dict(ctx.counts.uploaded_deletes),
            conflicts=tuple(ctx.conflicts),
            rejected=tuple(ctx.rejected),
            set_aside=tuple(ctx.set_aside),
            usage=self.remote.usage.minus(before),
            registered=registered,
            snapshot=snapshot,
            snapshot_error=snapshot_error,
            recovered=tuple(ctx.recovered),
            purged=purged,
            purge_error=purge_error,
        )

    def _register(self, ctx: SyncContext) -> None:
        ctx.progress("register", None, 0, 1)
        before = ctx.clock()
        ctx.measured_clock(before, self.remote.register(ctx.device_record()))
        self.local.set_device(registered=1)

    # -- snapshots (Big Brother) ------------------------------------------------------

    def _db_path(self) -> Path:
        name = self.database.database
        if not name or name == ":memory:" or str(name).startswith("file:"):
            raise ConfigurationError(
                "snapshots need a database file", hint="open the SqliteDatabase on a path"
            )
        return Path(name).resolve()

    def _snapshot_phase(self, ctx: SyncContext, *, uploaded: bool) -> str | None:
        """Publish under the snapshot strategy. A snapshot that cannot be made is reported
        in ``SyncReport.snapshot_error``; the sync itself has succeeded by then."""
        assert self.blobs is not None
        if not getattr(self.snapshot_strategy, "publishes", True):
            return None
        if sum(self.dirty_counts().values()):
            return None
        kek, _kdf = resolve_key(self.blobs, self.key, create=True)
        current = read_current(self.blobs, kek)
        manifest = current.manifest
        seen = None if manifest is None else manifest.snapshot_id
        if seen != self.local.manifest_seen:
            # a new snapshot appeared (ours or another device's): count afresh from it
            self.local.set_device(manifest_seen=seen, changes_since_snapshot=0)
        if uploaded:
            # move the cursors past this device's own uploads, so a device that
            # restores this snapshot does not download them again
            download(ctx, catch_up_only=True)
        for _attempt in range(2):
            decision = SnapshotDecision(
                watermarks=self.local.trackers(),
                manifest_watermarks=None if manifest is None else dict(manifest.watermarks),
                manifest_created=None
                if manifest is None
                else _dt.datetime.fromisoformat(manifest.created),
                dirty=sum(self.dirty_counts().values()),
                now=_dt.datetime.now(_dt.timezone.utc),
                changes=self.local.changes_since_snapshot,
            )
            if not self.snapshot_strategy.should_publish(decision):
                return None
            ctx.progress("snapshot", None, 0)
            try:
                published = publish(
                    connection=self.database.connection(),
                    db_path=self._db_path(),
                    blobs=self.blobs,
                    key=self.key,
                    watermarks=decision.watermarks,
                    seen_position=self.local.seen_position,
                    device_name=self.local.device_name,
                    current=current,
                    generation=_highest_generation(self.remote),
                    keep=getattr(self.snapshot_strategy, "keep", 3),
                    tables=self.collections,
                    on_bytes=_byte_counter(ctx, "snapshot"),
                    now=ctx.store_now().replace(tzinfo=_dt.timezone.utc),
                )
            except PreconditionFailed:
                current = read_current(self.blobs, kek)  # another device won: re-decide
                manifest = current.manifest
                continue
            self.local.set_device(
                last_snapshot=f"published {published.snapshot_id}",
                manifest_seen=published.snapshot_id,
                changes_since_snapshot=0,
                snapshot_generation=published.generation,
            )
            # the Devices collection learns the generation now: a later rollback of
            # the manifest to an older snapshot is then detectable by every device
            self._register(ctx)
            return published.snapshot_id
        return None

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

    def restore(self, *, force: bool = False) -> str:
        """Replace the synced tables with the latest snapshot; return its id.

        Refuses (``UnsafeRestoreError``) when the database holds unsynced
        changes, and, unless ``force``, when it holds any synced data. The
        snapshot is downloaded, authenticated and checked into a temporary file
        first; then the synced tables and replicator's metadata are replaced in
        one transaction. Tables the app keeps for itself are never touched.
        The restored database gets a new installation id.
        """
        if self.blobs is None:
            raise ConfigurationError("no blob store configured", hint="pass blobs= and key=")
        with self._lock:
            dirty = sum(self.dirty_counts().values())
            if dirty:
                raise UnsafeRestoreError(
                    f"the database holds {dirty} unsynced change(s); a restore would lose them"
                )
            if not force and not self.is_empty():
                raise UnsafeRestoreError(
                    "the database already holds synced data",
                    hint="pass force=True to replace it with the snapshot",
                )
            manifest, _kek, _kdf = open_latest(self.blobs, self.key)
            check_not_rolled_back(manifest, self.remote.devices())
            db_path = self._db_path()
            clean_leftovers(db_path)
            with temp_beside(db_path, "restore") as plain:
                fetch_and_decrypt(
                    self.blobs,
                    manifest,
                    self.key,
                    plain,
                    on_bytes=_byte_counter(self, "restore", manifest.size),
                )
                self.local = install_snapshot(
                    self.database,
                    plain,
                    self.collections,
                    device_name=self.local.device_name,
                    seen_position=manifest.seen_position,
                    note=f"restored {manifest.snapshot_id}",
                    defaults={
                        collection_name(m): {
                            f.column_name: missing_value(f) for f in m._meta.sorted_fields
                        }
                        for m in self.models
                    },
                )
            self._prepare_schema()
            return manifest.snapshot_id

    def login(self) -> SyncReport:
        """Start a session on this device: restore the latest snapshot if the
        database is empty, then sync (downloading only what the snapshot lacks)."""
        restored = None
        if self.blobs is not None and self.is_empty():
            try:
                restored = self.restore()
            except SnapshotNotFoundError:
                restored = None  # the first device: nothing to restore
        report = self.sync()
        return attrs.evolve(report, restored=restored)

    def progress(
        self, phase: str, collection: str | None, done: int, total: int | None = None
    ) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(phase, collection, done, total))


def _local_error(exc: peewee.DatabaseError) -> LocalDatabaseError:
    text = str(exc)
    busy = "locked" in text or "busy" in text
    hint = (
        "another connection kept the database locked; sync again (a longer"
        " SqliteDatabase(timeout=...) waits longer)"
        if busy
        else "check the disk and the database file (PRAGMA integrity_check)"
    )
    return LocalDatabaseError(
        f"the local database refused the sync: {text}", retryable=busy, hint=hint
    )


def _highest_generation(remote: RemoteStore) -> int:
    """The highest snapshot generation any device says it published."""
    return max((d.snapshot_generation or 0 for d in remote.devices()), default=0)


def _byte_counter(target: Any, phase: str, total: int | None = None) -> Callable[[int], None]:
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        target.progress(phase, None, done, total)

    return count
