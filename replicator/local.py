"""LocalState: typed access to replicator's own tables in the app's database, the
only code that reads or writes them (their schema and what each holds:
``tables.py``; the bundle ledger: ``ledger.py``).

Every method runs on the caller's connection and inside the caller's
transaction when there is one, so bookkeeping always moves with the data it
describes: a download cursor with its page, a tombstone with its delete, a
merge base with its row.
"""

from __future__ import annotations

import datetime as _dt
import platform as _platform
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import peewee

from .capture import preimage_json
from .codec import decode_json, encode_json
from .denied import DeniedLedger
from .errors import ConfigurationError
from .ledger import BundleLedger, BundleRecord
from .model import NOW_SQL, new_id
from .sql import select_in
from .tables import (
    CARRIED,
    DEVICE_LOCAL_TABLES,
    DEVICE_ONLY,
    OWN_TABLES,
    Recorded,
    create_tables,
    encode_rejected,
    forget_installation,
    read_recorded,
    sent_digest,
    table_names,
)

__all__ = [
    "CARRIED",
    "DEVICE_LOCAL_TABLES",
    "DEVICE_ONLY",
    "OWN_TABLES",
    "BundleRecord",
    "LocalState",
    "Recorded",
    "forget_installation",
    "read_recorded",
    "table_names",
]


class LocalState(BundleLedger, DeniedLedger):
    """Typed access to replicator's tables; every method runs on the caller's connection."""

    def __init__(self, db: peewee.Database, *, device_name: str | None = None) -> None:
        if not isinstance(db, peewee.SqliteDatabase):
            raise ConfigurationError(
                f"replicator needs a peewee SqliteDatabase, got {type(db).__name__}"
            )
        self.db = db
        with db.atomic():
            create_tables(db)
            row = db.execute_sql("SELECT installation_id FROM replicator_device").fetchone()
            if row is None:
                self._create_identity(device_name)
            elif device_name is not None:
                db.execute_sql("UPDATE replicator_device SET name = ?", (device_name,))

    def _create_identity(self, device_name: str | None) -> None:
        self.db.execute_sql(
            "INSERT INTO replicator_device (singleton, installation_id, name, platform)"
            " VALUES (1, ?, ?, ?)",
            (new_id(), device_name or socket.gethostname(), _platform.platform(terse=True)),
        )

    def new_identity(self) -> str:
        """Forget this database's installation id and take a fresh one (after a restore)."""
        with self.db.atomic():
            name_row = self.db.execute_sql("SELECT name FROM replicator_device").fetchone()
            self.db.execute_sql("DELETE FROM replicator_device")
            self._create_identity(name_row[0] if name_row else None)
        return self.installation_id

    # -- identity ---------------------------------------------------------------

    def _device(self, column: str) -> Any:
        row = self.db.execute_sql(f"SELECT {column} FROM replicator_device").fetchone()
        return row[0] if row else None

    @property
    def installation_id(self) -> str:
        return str(self._device("installation_id"))

    @property
    def device_name(self) -> str:
        return str(self._device("name"))

    @property
    def platform(self) -> str:
        return str(self._device("platform"))

    @property
    def seen_position(self) -> str | None:
        value = self._device("seen_position")
        return None if value is None else str(value)

    @property
    def last_sync(self) -> str | None:
        """When this device's last sync ended (ISO 8601, UTC), or None."""
        value = self._device("last_sync")
        return None if value is None else str(value)

    @property
    def registered(self) -> bool:
        return bool(self._device("registered"))

    @property
    def manifest_seen(self) -> str | None:
        """The snapshot the blob store's manifest named when this device last looked."""
        value = self._device("manifest_seen")
        return None if value is None else str(value)

    @property
    def changes_since_snapshot(self) -> int:
        return int(self._device("changes_since_snapshot") or 0)

    @property
    def snapshot_generation(self) -> int | None:
        """The generation of the last snapshot this device published."""
        value = self._device("snapshot_generation")
        return None if value is None else int(value)

    @property
    def clock_offset(self) -> float | None:
        """Seconds to add to this device's clock to get the store's, as last measured."""
        value = self._device("clock_offset")
        return None if value is None else float(value)

    @property
    def last_purge(self) -> _dt.datetime | None:
        """When (store time, naive UTC) this device last purged remote tombstones."""
        value = self._device("last_purge")
        try:
            return _dt.datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None

    def count_changes(self, moved: int) -> None:
        """Add rows a sync moved to the count Big Brother's ``min_changes`` reads."""
        if moved:
            self.db.execute_sql(
                "UPDATE replicator_device SET changes_since_snapshot = changes_since_snapshot + ?",
                (moved,),
            )

    def record_upload(self, **also: Any) -> None:
        """Note that an upload (a batch of rows, or a bundle the ingest service answered)
        was acknowledged now: the time ``replicator status`` shows as the last upload."""
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.set_device(last_upload=now, **also)

    def record_rejected(self, rows: Sequence[tuple[str, str, str]], **also: Any) -> None:
        """Keep (collection, id, why) of the rows the sync just ended could not upload,
        replacing the previous sync's, for ``replicator status`` (with the other device
        values ``also``, in the same statement)."""
        self.set_device(rejected=encode_rejected(rows), **also)

    def set_device(self, **values: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute_sql(f"UPDATE replicator_device SET {sets}", tuple(values.values()))

    # -- the applying gate --------------------------------------------------------

    @contextmanager
    def applying(self) -> Iterator[None]:
        """One IMMEDIATE transaction in which the engine's writes are not captured."""
        with self.db.atomic(lock_type="IMMEDIATE"):
            self.db.execute_sql("UPDATE replicator_control SET applying = 1")
            try:
                yield
            finally:
                self.db.execute_sql("UPDATE replicator_control SET applying = 0")

    # -- DownloadedTracker ----------------------------------------------------------

    def trackers(self) -> dict[str, str]:
        rows = self.db.execute_sql('SELECT collection, "downloadedTill" FROM "DownloadedTracker"')
        return {c: t for c, t in rows.fetchall() if t is not None}

    def tracker(self, collection: str) -> str | None:
        row = self.db.execute_sql(
            'SELECT "downloadedTill" FROM "DownloadedTracker" WHERE collection = ?', (collection,)
        ).fetchone()
        return None if row is None else row[0]

    def set_tracker(self, collection: str, cursor: str | None) -> None:
        self.db.execute_sql(
            'INSERT INTO "DownloadedTracker" (collection, "downloadedTill", "updatedOn")'
            " VALUES (?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now'))"
            ' ON CONFLICT (collection) DO UPDATE SET "downloadedTill" = excluded."downloadedTill",'
            ' "updatedOn" = excluded."updatedOn"',
            (collection, cursor),
        )

    # -- tombstones ----------------------------------------------------------------

    def tombstone(self, collection: str, doc_id: str) -> bool | None:
        """``None`` if the row is not known deleted, else whether the delete is still pending."""
        row = self.db.execute_sql(
            "SELECT pending FROM replicator_tombstones WHERE collection = ? AND id = ?",
            (collection, doc_id),
        ).fetchone()
        return None if row is None else bool(row[0])

    def add_tombstone(self, collection: str, doc_id: str, *, pending: bool, by: str) -> None:
        self.db.execute_sql(
            "INSERT INTO replicator_tombstones (collection, id, deleted_on, deleted_by, pending)"
            f" VALUES (?, ?, {NOW_SQL}, ?, ?)"
            " ON CONFLICT (collection, id) DO UPDATE SET pending = excluded.pending",
            (collection, doc_id, by, int(pending)),
        )

    def drop_tombstone(self, collection: str, doc_id: str) -> None:
        self.db.execute_sql(
            "DELETE FROM replicator_tombstones WHERE collection = ? AND id = ?",
            (collection, doc_id),
        )

    def pending_tombstones(
        self, collection: str, *, after: str | None = None, limit: int = -1
    ) -> list[tuple[str, str | None, str | None]]:
        """Deletes of ``collection`` still to upload, in id order, after ``after`` (from the
        first, the empty id included, when ``None``)."""
        since = "id >= ''" if after is None else "id > ?"
        return list(
            self.db.execute_sql(
                "SELECT id, deleted_on, deleted_by FROM replicator_tombstones"
                " INDEXED BY replicator_tombstones_pending_by_collection"
                f" WHERE collection = ? AND pending = 1 AND {since} ORDER BY id LIMIT ?",
                (collection, limit) if after is None else (collection, after, limit),
            ).fetchall()
        )

    def prune_acked_tombstones(self, before: str) -> int:
        """Forget acknowledged deletes made before ``before`` (device time text)."""
        cursor = self.db.execute_sql(
            "DELETE FROM replicator_tombstones INDEXED BY replicator_tombstones_acked"
            " WHERE pending = 0 AND deleted_on < ?",
            (before,),
        )
        return int(cursor.rowcount or 0)

    # -- recovery after purged tombstones ----------------------------------------------

    def any_recovery(self) -> bool:
        return (
            self.db.execute_sql("SELECT 1 FROM replicator_recovery LIMIT 1").fetchone() is not None
        )

    def recovery(self, collection: str) -> tuple[bool, list[str]] | None:
        """``(reconcile, columns to fill)`` of a download from the start under way, or None."""
        row = self.db.execute_sql(
            "SELECT reconcile, fill FROM replicator_recovery WHERE collection = ?", (collection,)
        ).fetchone()
        if row is None:
            return None
        return bool(row[0]), (decode_json(row[1]) if row[1] else [])

    def start_recovery(
        self, collection: str, *, reconcile: bool = True, fill: list[str] | None = None
    ) -> None:
        """Download ``collection`` again from its start: to ``reconcile`` (noting every id
        seen, then dropping the rows the remote no longer holds) and/or to ``fill``
        columns an app upgrade added from the documents. Joins one under way."""
        with self.db.atomic(lock_type="IMMEDIATE"):  # read, then write: lock first
            under_way = self.recovery(collection)
            if under_way is not None:
                reconcile = reconcile or under_way[0]
                fill = sorted({*(fill or []), *under_way[1]})
            self.db.execute_sql(
                "INSERT INTO replicator_recovery (collection, started_on, reconcile, fill)"
                f" VALUES (?, {NOW_SQL}, ?, ?) ON CONFLICT (collection) DO UPDATE SET"
                " reconcile = excluded.reconcile, fill = excluded.fill",
                (collection, int(reconcile), encode_json(fill) if fill else None),  # type: ignore[arg-type]
            )
            self.db.execute_sql("DELETE FROM replicator_seen WHERE collection = ?", (collection,))
            self.set_tracker(collection, None)

    def note_seen(self, collection: str, ids: list[str]) -> None:
        self.db.connection().executemany(
            "INSERT OR IGNORE INTO replicator_seen (collection, id) VALUES (?, ?)",
            [(collection, i) for i in ids],
        )

    def holds_synced(self, collection: str) -> bool:
        """Whether a row of ``collection`` was ever on the remote (``serverId`` set)."""
        found = self.db.execute_sql(
            f'SELECT 1 FROM "{collection}" WHERE "serverId" IS NOT NULL LIMIT 1'
        ).fetchone()
        return found is not None

    def synced_but_unseen(self, collection: str) -> list[tuple[str, bool]]:
        """(id, isDirty) of the rows the remote once held that the recovery did not see."""
        rows = self.db.execute_sql(
            f'SELECT id, "isDirty" FROM "{collection}" WHERE "serverId" IS NOT NULL'
            " AND id NOT IN (SELECT id FROM replicator_seen WHERE collection = ?)",
            (collection,),
        )
        return [(r[0], bool(r[1])) for r in rows.fetchall()]

    def end_recovery(self, collection: str) -> None:
        self.db.execute_sql("DELETE FROM replicator_recovery WHERE collection = ?", (collection,))
        self.db.execute_sql("DELETE FROM replicator_seen WHERE collection = ?", (collection,))

    def count_dirty(self, collection: str) -> int:
        (n,) = self.db.execute_sql(
            f'SELECT COUNT(*) FROM "{collection}" WHERE "isDirty" = 1'
        ).fetchone()
        return int(n)

    def ack_tombstones(self, collection: str, ids: Sequence[str]) -> None:
        """The deletes of ``ids`` are on the remote: keep them, no longer pending."""
        self.db.connection().executemany(
            "UPDATE replicator_tombstones SET pending = 0 WHERE collection = ? AND id = ?",
            [(collection, i) for i in ids],
        )

    def drop_pending_tombstones(self, collection: str) -> None:
        """Forget the deletes of ``collection`` waiting for upload (an upload-only
        collection's: a bundle carries rows, not deletes)."""
        self.db.execute_sql(
            "DELETE FROM replicator_tombstones WHERE collection = ? AND pending = 1",
            (collection,),
        )

    def count_pending_tombstones(self) -> dict[str, int]:
        rows = self.db.execute_sql(
            "SELECT collection, COUNT(*) FROM replicator_tombstones WHERE pending = 1"
            " GROUP BY collection"
        )
        return dict(rows.fetchall())

    def pending_counts(self, collections: Sequence[str]) -> dict[str, int]:
        """Rows and deletes waiting for upload, per collection."""
        tombs = self.count_pending_tombstones()
        return {c: self.count_dirty(c) + tombs.get(c, 0) for c in collections}

    def is_pending(self, collection: str, row_id: str) -> bool:
        """The row is dirty, or its delete is not uploaded yet (two lookups by key)."""
        row = self.db.execute_sql(
            f'SELECT "isDirty" FROM "{collection}" WHERE id = ?', (row_id,)
        ).fetchone()
        if row is not None:
            return bool(row[0])
        return bool(self.tombstone(collection, row_id))

    def pending_total(self, collections: Sequence[str]) -> int:
        return sum(self.pending_counts(collections).values())

    # -- base versions ---------------------------------------------------------------

    def base(self, collection: str, doc_id: str) -> tuple[str, dict[str, Any]] | None:
        row = self.db.execute_sql(
            "SELECT version, data FROM replicator_base WHERE collection = ? AND id = ?",
            (collection, doc_id),
        ).fetchone()
        return None if row is None else (row[0], decode_json(row[1]))

    def bases_for(self, collection: str, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """id → (version, data) of the bases of ``ids`` (one page of dirty rows)."""
        return {
            i: (v, decode_json(d))
            for i, v, d in self._in(
                "SELECT id, version, data FROM replicator_base WHERE collection = ? AND id IN ({})",
                collection,
                ids,
            )
        }

    def set_base(self, collection: str, doc_id: str, version: str, data: Mapping[str, Any]) -> None:
        self.db.execute_sql(
            "INSERT INTO replicator_base (collection, id, version, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version,"
            " data = excluded.data",
            (collection, doc_id, version, encode_json(data)),
        )

    def set_bases(self, collection: str, entries: list[tuple[str, str, Mapping[str, Any]]]) -> None:
        self.db.connection().executemany(
            "INSERT INTO replicator_base (collection, id, version, data) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (collection, id) DO UPDATE SET version = excluded.version,"
            " data = excluded.data",
            [(collection, i, v, encode_json(d)) for i, v, d in entries],
        )

    def row_states(self, collection: str, ids: list[str]) -> tuple[dict[str, bool], dict[str, str]]:
        """For the rows of ``ids`` that exist locally: id → isDirty, and id → the remote
        version each agrees with (one query)."""
        sql = f'SELECT id, "isDirty", "syncVersion" FROM "{collection}" WHERE id IN ({{}})'
        dirty: dict[str, bool] = {}
        versions: dict[str, str] = {}
        for doc_id, is_dirty, version in select_in(self.db.execute_sql, sql, ids):
            dirty[doc_id] = bool(is_dirty)
            if version is not None:
                versions[doc_id] = version
        return dirty, versions

    def set_versions(self, collection: str, entries: list[tuple[str, str | None]]) -> None:
        """Record (id, version) as the remote version each row now agrees with."""
        self.db.connection().executemany(
            f'UPDATE "{collection}" SET "syncVersion" = ? WHERE id = ?',
            [(v, i) for i, v in entries],
        )

    def keep_base(self, collection: str, columns: list[str], ids: list[str]) -> None:
        """Save the merge base of rows about to be changed by the engine itself (its
        writes are not captured): what the triggers save for an app's first change."""
        self.db.connection().executemany(
            "INSERT OR IGNORE INTO replicator_base (collection, id, version, data)"
            f' SELECT ?, id, "syncVersion", {preimage_json(columns)} FROM "{collection}"'
            ' WHERE id = ? AND "isDirty" = 0 AND "syncVersion" IS NOT NULL',
            [(collection, i) for i in ids],
        )

    def still_dirty(self, collection: str, ids: list[str]) -> list[str]:
        sql = f'SELECT id FROM "{collection}" WHERE "isDirty" = 1 AND id IN ({{}})'
        return [r[0] for r in select_in(self.db.execute_sql, sql, ids)]

    def drop_bases(self, collection: str, ids: list[str]) -> None:
        self.db.connection().executemany(
            "DELETE FROM replicator_base WHERE collection = ? AND id = ?",
            [(collection, i) for i in ids],
        )

    def trim_bases(self, collection: str) -> int:
        """Move a database of the earlier layout (a base for every synced row) to this one:
        each row's version into its ``syncVersion``, and bases kept only for dirty rows.
        Costs what ``replicator_base`` holds (the dirty rows, once moved). Runs its own
        ``applying()`` transaction when there is something to move."""
        conn = self.db.connection()
        moved = conn.execute(
            f'SELECT b.id, b.version FROM replicator_base b JOIN "{collection}" t ON t.id = b.id'
            ' WHERE b.collection = ? AND t."syncVersion" IS NULL',
            (collection,),
        ).fetchall()
        stale = conn.execute(
            f'SELECT b.id FROM replicator_base b LEFT JOIN "{collection}" t ON t.id = b.id'
            ' WHERE b.collection = ? AND (t.id IS NULL OR t."isDirty" = 0)',
            (collection,),
        ).fetchall()
        if moved or stale:  # else nothing is written: opening a database leaves it as it is
            with self.applying():
                self.set_versions(collection, [(i, v) for i, v in moved])
                self.drop_bases(collection, [r[0] for r in stale])
        return len(stale)

    def tombstones_for(self, collection: str, ids: list[str]) -> dict[str, bool]:
        """id → pending, for the ids known deleted."""
        return {
            i: bool(p)
            for i, p in self._in(
                "SELECT id, pending FROM replicator_tombstones WHERE collection = ? AND id IN ({})",
                collection,
                ids,
            )
        }

    def _in(self, sql: str, collection: str, ids: list[str]) -> list[tuple[Any, ...]]:
        return select_in(self.db.execute_sql, sql, ids, before=(collection,))

    # -- app upgrades ---------------------------------------------------------------------

    def known_columns(self, collection: str) -> set[str] | None:
        row = self.db.execute_sql(
            "SELECT columns FROM replicator_schema WHERE collection = ?", (collection,)
        ).fetchone()
        return None if row is None else set(decode_json(row[0]))

    def set_known_columns(self, collection: str, cols: list[str]) -> None:
        self.db.execute_sql(
            "INSERT INTO replicator_schema (collection, columns) VALUES (?, ?)"
            " ON CONFLICT (collection) DO UPDATE SET columns = excluded.columns",
            (collection, encode_json(sorted(cols))),  # type: ignore[arg-type]
        )

    def bases_with(self, collection: str, column: str) -> list[tuple[str, Any]]:
        """(id, value) of ``column`` in every base of ``collection`` that holds it."""
        rows = self.db.execute_sql(
            "SELECT id, data FROM replicator_base WHERE collection = ?", (collection,)
        )
        out = []
        for doc_id, text in rows:
            data = decode_json(text)
            if isinstance(data, dict) and column in data:
                out.append((doc_id, data[column]))
        return out

    # -- what the last upload sent ------------------------------------------------------

    def record_sent(self, entries: list[tuple[str, str, str]]) -> tuple[int, int]:
        """Remember ``(collection, id, values as JSON)`` of writes about to be pushed;
        return the span of journal rowids they took (for :meth:`forget_sends`).

        Every unacknowledged send of a row is kept (a retry after a lost
        acknowledgement may send newer values than the batch that committed).
        """
        top = "SELECT COALESCE(max(rowid), 0) FROM replicator_sent"
        (first,) = self.db.execute_sql(top).fetchone()
        self.db.connection().executemany(
            "INSERT OR IGNORE INTO replicator_sent (collection, id, sent, digest)"
            " VALUES (?, ?, ?, ?)",
            [(c, i, sent, sent_digest(sent)) for c, i, sent in entries],
        )
        (last,) = self.db.execute_sql(top).fetchone()
        return first + 1, last

    def sent_values(self, collection: str, doc_id: str) -> list[dict[str, Any]]:
        """The values of each unacknowledged send of a row, oldest first."""
        rows = self.db.execute_sql(
            "SELECT sent FROM replicator_sent WHERE collection = ? AND id = ? ORDER BY rowid",
            (collection, doc_id),
        ).fetchall()
        return [decode_json(r[0]) for r in rows]

    def sent_top(self) -> int:
        """The journal's last rowid (0: empty); the sends up to it were made before now."""
        (top,) = self.db.execute_sql(
            "SELECT COALESCE(max(rowid), 0) FROM replicator_sent"
        ).fetchone()
        return int(top)

    def sent_keys(self, upto: int, after: tuple[str, str], limit: int) -> list[tuple[str, str]]:
        """The rows with a send journalled at rowid ``upto`` or before, as (collection,
        id), in key order after ``after`` (``("", "")``: from the first), ``limit`` at most."""
        rows = self.db.execute_sql(
            "SELECT DISTINCT collection, id FROM replicator_sent WHERE rowid <= ?"
            " AND (collection, id) > (?, ?) ORDER BY collection, id LIMIT ?",
            (upto, *after, limit),
        ).fetchall()
        return [(c, i) for c, i in rows]

    def forget_sent(self, collection: str, ids: list[str]) -> None:
        self.db.connection().executemany(
            "DELETE FROM replicator_sent WHERE collection = ? AND id = ?",
            [(collection, i) for i in ids],
        )

    def forget_sends(self, span: tuple[int, int], acked: Mapping[str, list[str]]) -> None:
        """Forget every send of the rows ``acked`` (collection → ids), whose latest send took
        the journal rowids ``span``: one range delete when the journal holds nothing older
        (the usual case: no acknowledgement was lost), else row by row."""
        older = self.db.execute_sql(
            "SELECT 1 FROM replicator_sent WHERE rowid < ? LIMIT 1", (span[0],)
        ).fetchone()
        if older is None:
            self.db.execute_sql("DELETE FROM replicator_sent WHERE rowid BETWEEN ? AND ?", span)
            return
        for coll, ids in acked.items():
            self.forget_sent(coll, ids)

    # -- remote documents set aside -------------------------------------------------------

    def park(self, collection: str, doc_id: str, reason: str) -> None:
        self.db.execute_sql(
            "INSERT INTO replicator_parked (collection, id, reason, parked_on)"
            f" VALUES (?, ?, ?, {NOW_SQL})"
            " ON CONFLICT (collection, id) DO UPDATE SET reason = excluded.reason",
            (collection, doc_id, reason),
        )

    def unpark(self, collection: str, ids: list[str]) -> None:
        """Forget ``ids`` as set aside (they were applied, or are gone)."""
        if self.db.execute_sql("SELECT 1 FROM replicator_parked LIMIT 1").fetchone() is None:
            return
        self.db.connection().executemany(
            "DELETE FROM replicator_parked WHERE collection = ? AND id = ?",
            [(collection, i) for i in ids],
        )

    def parked(self) -> dict[str, dict[str, str]]:
        """collection → {id: reason} of the remote documents set aside."""
        out: dict[str, dict[str, str]] = {}
        for coll, doc_id, reason in self.db.execute_sql(
            "SELECT collection, id, reason FROM replicator_parked ORDER BY collection, id"
        ).fetchall():
            out.setdefault(coll, {})[doc_id] = reason
        return out

    def drop_base(self, collection: str, doc_id: str) -> None:
        self.drop_bases(collection, [doc_id])
