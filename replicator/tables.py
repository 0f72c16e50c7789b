"""replicator's own tables inside the application's database: their schema, which of
them a snapshot carries, and reading them without writing.

* ``replicator_device``: this installation's identity and its view of the
  Devices collection. Device-local: never synced, never in a snapshot.
* ``replicator_control``: the ``applying`` flag that silences change capture
  while the engine writes remote changes (see ``capture.py``).
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
  ``sync/upgrade.py``).
* ``replicator_sent``: per row in flight, exactly the values each unacknowledged
  upload sent. When the acknowledgement of a committed batch is lost, the
  remote document that carries those values is recognised as this device's
  own write by its content, never by the ``updatedBy`` it claims.
* ``replicator_parked``: remote documents this device could not apply (a
  parent that never arrived, a malformed value). They are set aside so that
  one bad document never blocks a device, reported, and retried each sync.
* ``replicator_bundles`` and ``replicator_bundle_rows``: bundles of upload-only rows
  on their way to the ingest service (``bundles/``) and, per row, the
  ``syncRev`` it was bundled at. A row is in at most one bundle; it is marked
  synced only when the service accepted the bundle and the row is unchanged.
  Device-only: never in a snapshot.
* ``replicator_refused``: upload-only rows the ingest service refused, with its
  reason, until a later version of the row is accepted.
* ``replicator_denied``: rows and deletes the remote's security rules refused
  (``denied.py``), with the reason and time, set aside: the row stays as the app
  wrote it and is not sent again until the app changes it or asks for a retry.
* ``replicator_recovery`` and ``replicator_seen``: a collection being
  downloaded again from the start because the remote purged tombstones this
  device never saw (see ``sync/retention.py``), and the ids seen so far. Both move
  with the pages they describe, so a recovery killed part-way resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import peewee

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
        last_purge TEXT,
        rejected TEXT
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
    """CREATE TABLE IF NOT EXISTS replicator_denied (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        rev INTEGER,
        is_delete INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL,
        denied_on TEXT NOT NULL,
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
    "rejected": "TEXT",
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
    "replicator_denied",
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
    #: bundles made and not yet accepted (``bundles/``), and rows the service refused
    bundles: int = 0
    refused: Mapping[str, int] = attrs.field(factory=dict)
    #: (collection, id, why) of rows the last sync could not upload (at most
    #: ``REJECTED_KEPT``), and how many it rejected in all
    rejected: tuple[tuple[str, str, str], ...] = ()
    rejected_total: int = 0
    #: (collection, id, why) of remote documents set aside (at most ``REJECTED_KEPT``),
    #: and how many are set aside in all
    set_aside: tuple[tuple[str, str, str], ...] = ()
    set_aside_total: int = 0
    #: (collection, id, why) of writes the remote's rules refused, set aside (at most
    #: ``REJECTED_KEPT``), and how many are set aside in all
    denied: tuple[tuple[str, str, str], ...] = ()
    denied_total: int = 0


#: how many rejected rows (and set-aside documents) are kept with their reason for
#: ``replicator status``: enough to see what is wrong, never a copy of a large backlog
REJECTED_KEPT = 50


def encode_rejected(rows: Sequence[tuple[str, str, str]]) -> str | None:
    """What ``replicator_device.rejected`` holds for the rows a sync rejected."""
    if not rows:
        return None
    return json.dumps({"total": len(rows), "rows": [list(r) for r in rows[:REJECTED_KEPT]]})


def _decode_rejected(text: Any) -> tuple[tuple[tuple[str, str, str], ...], int]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
        rows = tuple((str(c), str(i), str(why)) for c, i, why in value.get("rows", ()))
        return rows, int(value.get("total", len(rows)))
    except (ValueError, TypeError, AttributeError):
        return (), 0


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
    rejected, rejected_total = _decode_rejected((device or {}).get("rejected"))
    set_aside: tuple[tuple[str, str, str], ...] = ()
    set_aside_total = 0
    if "replicator_parked" in have:
        set_aside = tuple(
            execute(
                "SELECT collection, id, reason FROM replicator_parked"
                f" ORDER BY collection, id LIMIT {REJECTED_KEPT}"
            )
        )
        set_aside_total = execute("SELECT COUNT(*) FROM replicator_parked").fetchone()[0]
    denied, denied_total = _read_denied(execute, have)
    return Recorded(
        device,
        trackers,
        deletes,
        bundles,
        refused,
        rejected=rejected,
        rejected_total=rejected_total,
        set_aside=set_aside,
        set_aside_total=set_aside_total,
        denied=denied,
        denied_total=denied_total,
    )


def _read_denied(
    execute: Callable[..., Any], have: set[str]
) -> tuple[tuple[tuple[str, str, str], ...], int]:
    if "replicator_denied" not in have:
        return (), 0
    rows = tuple(
        (c, i, f"{'delete ' if d else ''}refused {on}: {why}")
        for c, i, d, why, on in execute(
            "SELECT collection, id, is_delete, reason, denied_on FROM replicator_denied"
            f" ORDER BY collection, id LIMIT {REJECTED_KEPT}"
        )
    )
    return rows, execute("SELECT COUNT(*) FROM replicator_denied").fetchone()[0]


def create_tables(db: peewee.Database) -> None:
    """Create replicator's tables where missing, and bring those an older replicator
    made up to date. The caller holds a transaction."""
    for sql in _SCHEMA:
        db.execute_sql(sql)
    _add_missing_columns(db)
    _rekey_sent(db)


def _add_missing_columns(db: peewee.Database) -> None:
    """Bring a replicator_device table made by an older replicator up to date."""
    have = {r[1] for r in db.execute_sql("PRAGMA table_info(replicator_device)")}
    for column, decl in _LATER_DEVICE_COLUMNS.items():
        if column not in have:
            db.execute_sql(f"ALTER TABLE replicator_device ADD COLUMN {column} {decl}")


def _rekey_sent(db: peewee.Database) -> None:
    """Move a journal of the earlier layout (keyed on the JSON itself) to the digest key."""
    have = {r[1] for r in db.execute_sql("PRAGMA table_info(replicator_sent)")}
    if "digest" in have:
        return
    rows = db.execute_sql(
        "SELECT collection, id, sent FROM replicator_sent ORDER BY rowid"
    ).fetchall()
    db.execute_sql("DROP TABLE replicator_sent")
    db.execute_sql(_SENT_TABLE)
    db.connection().executemany(
        "INSERT OR IGNORE INTO replicator_sent (collection, id, sent, digest) VALUES (?, ?, ?, ?)",
        [(c, i, sent, sent_digest(sent)) for c, i, sent in rows],
    )
