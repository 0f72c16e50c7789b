"""replicator's own tables inside the application's database.

* ``replicator_device``: this installation's identity and its view of the
  Devices collection. Device-local: never synced, never in a snapshot.
* ``replicator_control``: the ``applying`` flag that silences change capture
  while the engine writes remote changes (see ``model.py``).
* ``DownloadedTracker``: per collection, ``downloadedTill``, the cursor of the
  last applied remote change. It moves in the same transaction as the page
  of changes it covers.
* ``replicator_tombstones``: deleted rows. ``pending = 1`` until the delete is
  uploaded; kept afterwards so a late change to a deleted row is recognised
  (deletes win) and an orphaned child is recognised as such.
* ``replicator_base``: per **dirty** row that the remote held, the remote
  version and data this device last agreed on: the common ancestor of a
  three-way merge and what an update's changed columns are measured against.
  The triggers save it when a clean row is first changed (its values then are
  the remote's); it goes when the row is synced. A clean row keeps only the
  version, in its own ``syncVersion`` column, so the bookkeeping of a synced
  database is a few bytes per row, not a copy of it.
* ``replicator_schema``: the columns of each synced table as this device last
  synced them, so that a column an app upgrade adds is noticed (see
  ``adopt_new_columns``).
* ``replicator_sent``: per row in flight, exactly the values each unacknowledged
  upload sent. When the acknowledgement of a committed batch is lost, the
  remote document that carries those values is recognised as this device's
  own write by its content, never by the ``updatedBy`` it claims.
* ``replicator_parked``: remote documents this device could not apply (a
  parent that never arrived, a malformed value). They are set aside so that
  one bad document never blocks a device, reported, and retried each sync.
* ``replicator_bundles`` and ``replicator_bundle_rows``: bundles of upload-only rows
  on their way to the ingest service (``bundles.py``) and, per row, the
  ``syncRev`` it was bundled at. A row is in at most one bundle; it is marked
  synced only when the service accepted the bundle and the row is unchanged.
  Device-only: never in a snapshot.
* ``replicator_refused``: upload-only rows the ingest service refused, with its
  reason, until a later version of the row is accepted.
* ``replicator_recovery`` and ``replicator_seen``: a collection being
  downloaded again from the start because the remote purged tombstones this
  device never saw (see ``retention.py``), and the ids seen so far. Both move
  with the pages they describe, so a recovery killed part-way resumes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform as _platform
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import peewee

from .codec import decode_json, encode_json
from .errors import ConfigurationError
from .model import NOW_SQL, new_id, preimage_json
from .sql import select_in

#: the journal of sends; a send of values already journaled for the row is kept once,
#: recognised by a 64-bit digest of the JSON (a key on the JSON itself would store it twice)
_SENT_TABLE = """CREATE TABLE IF NOT EXISTS replicator_sent (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        sent TEXT NOT NULL,
        digest INTEGER NOT NULL,
        UNIQUE (collection, id, digest)
    )"""


def sent_digest(sent: str) -> int:
    """The journal's key for a send's JSON: 64 bits of BLAKE2b, as a signed integer."""
    return int.from_bytes(
        hashlib.blake2b(sent.encode(), digest_size=8).digest(), "big", signed=True
    )


_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS replicator_device (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        installation_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL DEFAULT '',
        seen_position TEXT,
        last_upload TEXT,
        last_sync TEXT,
        registered INTEGER NOT NULL DEFAULT 0,
        last_snapshot TEXT,
        manifest_seen TEXT,
        changes_since_snapshot INTEGER NOT NULL DEFAULT 0,
        clock_offset REAL,
        snapshot_generation INTEGER,
        last_purge TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS replicator_control (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        applying INTEGER NOT NULL DEFAULT 0
    )""",
    "INSERT OR IGNORE INTO replicator_control (singleton, applying) VALUES (1, 0)",
    """CREATE TABLE IF NOT EXISTS "DownloadedTracker" (
        collection TEXT PRIMARY KEY,
        "downloadedTill" TEXT,
        "updatedOn" TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS replicator_tombstones (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        deleted_on TEXT,
        deleted_by TEXT,
        pending INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (collection, id)
    )""",
    "CREATE INDEX IF NOT EXISTS replicator_tombstones_pending"
    " ON replicator_tombstones (pending) WHERE pending = 1",
    # the pending deletes of one collection, in id order, without walking the others
    "CREATE INDEX IF NOT EXISTS replicator_tombstones_pending_by_collection"
    " ON replicator_tombstones (collection, id) WHERE pending = 1",
    """CREATE TABLE IF NOT EXISTS replicator_schema (
        collection TEXT PRIMARY KEY,
        columns TEXT NOT NULL
    )""",
    _SENT_TABLE,
    """CREATE TABLE IF NOT EXISTS replicator_parked (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        reason TEXT NOT NULL,
        parked_on TEXT NOT NULL,
        PRIMARY KEY (collection, id)
    )""",
    # acknowledged deletes by age: what pruning removes once they pass the retention
    "CREATE INDEX IF NOT EXISTS replicator_tombstones_acked"
    " ON replicator_tombstones (deleted_on) WHERE pending = 0",
    """CREATE TABLE IF NOT EXISTS replicator_recovery (
        collection TEXT PRIMARY KEY,
        started_on TEXT NOT NULL,
        reconcile INTEGER NOT NULL DEFAULT 1,
        fill TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS replicator_seen (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (collection, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS replicator_bundles (
        bundle TEXT PRIMARY KEY,
        collection TEXT NOT NULL,
        key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        count INTEGER NOT NULL,
        state TEXT NOT NULL,
        created TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS replicator_bundle_rows (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        bundle TEXT NOT NULL,
        rev INTEGER,
        PRIMARY KEY (collection, id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS replicator_bundle_rows_by_bundle"
    " ON replicator_bundle_rows (bundle)",
    """CREATE TABLE IF NOT EXISTS replicator_refused (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        bundle TEXT NOT NULL,
        reason TEXT NOT NULL,
        refused_on TEXT NOT NULL,
        PRIMARY KEY (collection, id)
    )""",
    """CREATE TABLE IF NOT EXISTS replicator_base (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        version TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (collection, id)
    )""",
]

#: replicator_device columns added after the first release, with their declarations
_LATER_DEVICE_COLUMNS = {
    "last_snapshot": "TEXT",
    "manifest_seen": "TEXT",
    "changes_since_snapshot": "INTEGER NOT NULL DEFAULT 0",
    "clock_offset": "REAL",
    "snapshot_generation": "INTEGER",
    "last_purge": "TEXT",
}

#: replicator's tables a snapshot carries and a restore installs as they are
CARRIED = (
    "DownloadedTracker",
    "replicator_tombstones",
    "replicator_base",
    "replicator_parked",
    "replicator_schema",
    "replicator_recovery",
    "replicator_seen",
    "replicator_refused",
)
#: replicator's tables about this installation only: a snapshot's copy and a restore
#: empty them (the identity in ``replicator_device``; the sends in flight)
DEVICE_LOCAL_TABLES = ("replicator_device",)
DEVICE_ONLY = ("replicator_sent", "replicator_bundles", "replicator_bundle_rows")
#: every table of replicator's in an app's database
OWN_TABLES = (*CARRIED, *DEVICE_LOCAL_TABLES, *DEVICE_ONLY, "replicator_control")


def table_names(execute: Callable[..., Any], schema: str = "main") -> list[str]:
    """The tables of a database, sorted by name, through ``execute``
    (``sqlite3.Connection.execute`` or ``Database.execute_sql``)."""
    sql = f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' ORDER BY name"
    return [r[0] for r in execute(sql)]


def forget_installation(execute: Callable[..., Any]) -> None:
    """In a copy of a database (a snapshot being made, a file about to be restored):
    forget the installation (its identity, its sends in flight) and open the capture
    gate. ``execute`` runs a statement on the copy's connection, inside its transaction."""
    have = set(table_names(execute))
    for table in (*DEVICE_LOCAL_TABLES, *DEVICE_ONLY):
        if table in have:
            execute(f'DELETE FROM "{table}"')
    if "replicator_control" in have:
        execute("UPDATE replicator_control SET applying = 0")


@attrs.frozen
class Recorded:
    """What replicator's tables of a database say, read without writing anything."""

    device: Mapping[str, Any] | None  # replicator_device's row, by column name
    trackers: Mapping[str, str]  # collection → downloadedTill
    pending_deletes: Mapping[str, int]  # collection → deletes not uploaded yet
    #: bundles made and not yet accepted (``bundles.py``), and rows the service refused
    bundles: int = 0
    refused: Mapping[str, int] = attrs.field(factory=dict)


def read_recorded(execute: Callable[..., Any]) -> Recorded | None:
    """Read replicator's tables through ``execute`` (``sqlite3.Connection.execute`` or
    ``Database.execute_sql``), e.g. on a read-only connection; ``None`` when the
    database has none (replicator never opened it)."""
    have = set(table_names(execute))
    if "replicator_device" not in have:
        return None
    cursor = execute("SELECT * FROM replicator_device")
    row = cursor.fetchone()
    names = [d[0] for d in cursor.description]
    device = None if row is None else dict(zip(names, row, strict=True))
    trackers: dict[str, str] = {}
    if "DownloadedTracker" in have:
        trackers = {
            c: t
            for c, t in execute('SELECT collection, "downloadedTill" FROM "DownloadedTracker"')
            if t is not None
        }
    deletes: dict[str, int] = {}
    if "replicator_tombstones" in have:
        deletes = dict(
            execute(
                "SELECT collection, COUNT(*) FROM replicator_tombstones WHERE pending = 1"
                " GROUP BY collection"
            )
        )
    bundles = 0
    if "replicator_bundles" in have:
        bundles = execute("SELECT COUNT(*) FROM replicator_bundles").fetchone()[0]
    refused: dict[str, int] = {}
    if "replicator_refused" in have:
        refused = dict(
            execute("SELECT collection, COUNT(*) FROM replicator_refused GROUP BY collection")
        )
    return Recorded(device, trackers, deletes, bundles, refused)


class LocalState:
    """Typed access to replicator's tables; every method runs on the caller's connection."""

    def __init__(self, db: peewee.Database, *, device_name: str | None = None) -> None:
        if not isinstance(db, peewee.SqliteDatabase):
            raise ConfigurationError(
                f"replicator needs a peewee SqliteDatabase, got {type(db).__name__}"
            )
        self.db = db
        with db.atomic():
            for sql in _SCHEMA:
                db.execute_sql(sql)
            self._add_missing_columns()
            self._rekey_sent()
            row = db.execute_sql("SELECT installation_id FROM replicator_device").fetchone()
            if row is None:
                self._create_identity(device_name)
            elif device_name is not None:
                db.execute_sql("UPDATE replicator_device SET name = ?", (device_name,))

    def _add_missing_columns(self) -> None:
        """Bring a replicator_device table made by an older replicator up to date."""
        have = {r[1] for r in self.db.execute_sql("PRAGMA table_info(replicator_device)")}
        for column, decl in _LATER_DEVICE_COLUMNS.items():
            if column not in have:
                self.db.execute_sql(f"ALTER TABLE replicator_device ADD COLUMN {column} {decl}")

    def _rekey_sent(self) -> None:
        """Move a journal of the earlier layout (keyed on the JSON itself) to the digest key."""
        have = {r[1] for r in self.db.execute_sql("PRAGMA table_info(replicator_sent)")}
        if "digest" in have:
            return
        rows = self.db.execute_sql(
            "SELECT collection, id, sent FROM replicator_sent ORDER BY rowid"
        ).fetchall()
        self.db.execute_sql("DROP TABLE replicator_sent")
        self.db.execute_sql(_SENT_TABLE)
        self.db.connection().executemany(
            "INSERT OR IGNORE INTO replicator_sent (collection, id, sent, digest)"
            " VALUES (?, ?, ?, ?)",
            [(c, i, sent, sent_digest(sent)) for c, i, sent in rows],
        )

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

    # -- bundles of upload-only rows (bundles.py) ------------------------------------

    def bundles(self) -> list[BundleRecord]:
        """The bundles this device made that the service has not settled, oldest first."""
        rows = self.db.execute_sql(
            "SELECT bundle, collection, key, sha256, size, count, state, created"
            " FROM replicator_bundles ORDER BY created, bundle"
        ).fetchall()
        return [BundleRecord(*r) for r in rows]

    def add_bundle(self, record: BundleRecord, rows: Sequence[tuple[str, int]]) -> None:
        """Record a bundle and the rows (id, syncRev) it carries, in one transaction."""
        with self.db.atomic():
            self.db.execute_sql(
                "INSERT INTO replicator_bundles"
                " (bundle, collection, key, sha256, size, count, state, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                attrs.astuple(record),
            )
            self.db.connection().executemany(
                "INSERT INTO replicator_bundle_rows (collection, id, bundle, rev)"
                " VALUES (?, ?, ?, ?)",
                [(record.collection, i, record.bundle, rev) for i, rev in rows],
            )

    def set_bundle_state(self, bundle: str, state: str) -> None:
        self.db.execute_sql(
            "UPDATE replicator_bundles SET state = ? WHERE bundle = ?", (state, bundle)
        )

    def drop_bundle(self, bundle: str) -> None:
        """Forget a bundle the service never took: its rows are free for the next one."""
        with self.db.atomic():
            self.db.execute_sql("DELETE FROM replicator_bundle_rows WHERE bundle = ?", (bundle,))
            self.db.execute_sql("DELETE FROM replicator_bundles WHERE bundle = ?", (bundle,))

    def settle_bundle(self, record: BundleRecord, refused: Mapping[str, str]) -> tuple[int, int]:
        """The service accepted ``record``: mark its rows synced (those unchanged since they
        were bundled), keep the reasons of the ``refused`` ones, and forget the bundle. One
        transaction. Returns (rows accepted, rows refused) among the unchanged rows."""
        table, bundle = record.collection, record.bundle
        # the bundle's rows, as they stand now, that are as they were bundled
        members = (
            f'SELECT b.id FROM replicator_bundle_rows b JOIN "{table}" t ON t.id = b.id'
            ' WHERE b.bundle = ? AND t."syncRev" IS b.rev'
        )
        with self.applying():
            gone = [
                r[0]
                for r in select_in(
                    self.db.execute_sql,
                    f"{members} AND b.id IN ({{}})",
                    sorted(refused),
                    before=(bundle,),
                )
            ]
            marked = self.db.execute_sql(
                f'UPDATE "{table}" SET "isDirty" = 0, "serverId" = id'
                " WHERE id IN (SELECT id FROM replicator_bundle_rows WHERE bundle = ?)"
                ' AND "syncRev" IS (SELECT rev FROM replicator_bundle_rows b'
                f' WHERE b.collection = ? AND b.id = "{table}".id)',
                (bundle, table),
            ).rowcount
            # a row accepted now needs no refusal; a row changed since keeps its old one
            any_refused = self.db.execute_sql(
                "SELECT 1 FROM replicator_refused WHERE collection = ? LIMIT 1", (table,)
            ).fetchone()
            if any_refused:
                self.db.execute_sql(
                    f"DELETE FROM replicator_refused WHERE collection = ? AND id IN ({members})",
                    (table, bundle),
                )
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            self.db.connection().executemany(
                "INSERT OR REPLACE INTO replicator_refused"
                " (collection, id, bundle, reason, refused_on) VALUES (?, ?, ?, ?, ?)",
                [(table, i, bundle, refused[i], now) for i in gone],
            )
            self.drop_bundle(bundle)
        return marked - len(gone), len(gone)

    def refused(self, collection: str) -> list[tuple[str, str, str]]:
        """(id, reason, bundle) of the rows of ``collection`` the ingest service refused."""
        rows = self.db.execute_sql(
            "SELECT id, reason, bundle FROM replicator_refused WHERE collection = ? ORDER BY id",
            (collection,),
        )
        return [tuple(r) for r in rows.fetchall()]


@attrs.frozen
class BundleRecord:
    """A bundle as this device recorded it: ``state`` is ``built`` (made, maybe not
    stored yet) or ``requested`` (stored, and the service asked to ingest it)."""

    bundle: str
    collection: str
    key: str
    sha256: str
    size: int
    count: int
    state: str
    created: str
