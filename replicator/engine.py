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

import datetime as _dt
import threading
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from .context import SyncContext
from .download import download
from .errors import ConfigurationError
from .local import LocalState
from .model import SyncModel, check_models, collection_name, install_capture, sort_models
from .report import Progress, Resolution, SyncReport
from .stores.base import RemoteStore
from .strategies.conflict import LastWriterWins
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
        *,
        conflict_strategy: Any = None,
        device_name: str | None = None,
        app_version: str = "",
        page_size: int = 500,
        on_progress: Callable[[Progress], None] | None = None,
        on_conflict: Callable[[Resolution], None] | None = None,
    ) -> None:
        if not models:
            raise ConfigurationError("Replicator needs at least one model to sync")
        if page_size < 1:
            raise ConfigurationError(f"page_size must be positive, got {page_size}")
        check_models(models)
        self.database = database
        self.models = sort_models(models)
        self.remote = remote
        self.conflict_strategy = conflict_strategy or LastWriterWins()
        self.app_version = app_version
        self.page_size = page_size
        self.on_progress = on_progress
        self.on_conflict = on_conflict
        self._lock = threading.Lock()
        self.local = LocalState(database, device_name=device_name)
        with database.atomic():
            install_capture(database, self.models)  # type: ignore[arg-type]

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
        counts = {}
        tombs = self.local.count_pending_tombstones()
        for model in self.models:
            coll = collection_name(model)
            (n,) = self.database.execute_sql(
                f'SELECT COUNT(*) FROM "{coll}" WHERE "isDirty" = 1'
            ).fetchone()
            counts[coll] = n + tombs.get(coll, 0)
        return counts

    def sync(self) -> SyncReport:
        """Download, upload, register. Raises a ``ReplicatorError`` on failure."""
        if self.database.in_transaction():
            raise ConfigurationError(
                "sync() cannot run inside a transaction",
                hint="commit or leave the atomic() block first",
            )
        with self._lock:
            return self._sync()

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
        )
        others = download(ctx)
        pushed = upload(ctx)
        registered = pushed is not None
        if pushed is None and (others or not self.local.registered):
            ctx.progress("register", None, 0, 1)
            self.remote.register(ctx.device_record())
            self.local.set_device(registered=1)
            registered = True
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
            usage=self.remote.usage.minus(before),
            registered=registered,
        )
