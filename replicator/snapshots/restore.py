"""Restore: plan, fetch, install: replacing only what replicator owns.

A snapshot holds the synced tables and replicator's metadata, never the
app's own tables (see ``files.write_plain_copy``). Installing it copies
those tables into the live database inside one transaction:

* the app's own tables (settings, caches, plain peewee models) are not
  touched, whatever they hold;
* a synced table the snapshot lacks (the app added a table since) is left
  empty, and a column the snapshot lacks (the app added a column) takes its
  default, then the columns it gained are filled from the rows' bases, as
  after any app upgrade (``sync.upgrade.adopt_new_columns``);
* nothing is written until the snapshot has been downloaded, authenticated
  and integrity-checked into a temporary file, and the copy either commits
  whole or not at all, so a failed restore leaves the database as it was.

One path serves ``Replicator.restore`` and the ``replicator snapshot restore``
command: :func:`prepare` plans and checks (what the database holds, which
snapshot is latest, authenticated, and not rolled back), then
:meth:`Restore.run` fetches it into a temporary file beside the database and
installs it.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import peewee

from ..capture import restamp_triggers
from ..cipher.copies import open_like, write_encrypted
from ..cipher.database import attach_key, is_encrypted
from ..errors import ConfigurationError, TamperedSnapshotError, UnsafeRestoreError
from ..local import (
    CARRIED,
    DEVICE_ONLY,
    LocalState,
    forget_installation,
    read_recorded,
    table_names,
)
from ..model import SYNC_COLUMNS
from ..sql import local_error
from ..stores.base import BlobStore, DeviceRecord
from .crypto import SnapshotSecret
from .fetch import fetch_and_decrypt, older, open_latest
from .files import clean_leftovers, temp_beside
from .manifest import Manifest, check_not_rolled_back


@attrs.frozen
class Plan:
    """What a restore found before touching anything."""

    synced_tables: tuple[str, ...]
    pending_changes: int
    synced_rows: int
    managed: bool  # the database already holds replicator's tables
    downloaded: bool = False  # a download ever advanced a cursor here


def synced_tables(conn: sqlite3.Connection | peewee.Database, schema: str = "main") -> list[str]:
    """Tables of ``schema`` carrying every sync column, sorted by name."""
    execute = conn.execute_sql if isinstance(conn, peewee.Database) else conn.execute
    return [
        name
        for name in table_names(execute, schema)
        if set(SYNC_COLUMNS) <= {c[1] for c in execute(f'PRAGMA {schema}.table_info("{name}")')}
    ]


def plan(db: peewee.SqliteDatabase, tables: Sequence[str] | None = None) -> Plan:
    """Count what a restore would replace: unsynced changes and synced rows."""
    try:
        names = {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master")}
    except peewee.DatabaseError as exc:  # damaged, not SQLite, busy: the package's one rule
        raise local_error(f"{db.database} cannot be restored into", exc, db.database) from exc
    tables = list(tables) if tables is not None else synced_tables(db)
    dirty = rows = 0
    for table in tables:
        if table in names:
            (n,) = db.execute_sql(f'SELECT COUNT(*) FROM "{table}"').fetchone()
            (d,) = db.execute_sql(f'SELECT COUNT(*) FROM "{table}" WHERE "isDirty" = 1').fetchone()
            rows, dirty = rows + n, dirty + d
    recorded = read_recorded(db.execute_sql)
    if recorded is None:
        return Plan(tuple(tables), dirty, rows, False)
    dirty += sum(recorded.pending_deletes.values())
    return Plan(tuple(tables), dirty, rows, True, bool(recorded.trackers))


def database_file(db: peewee.SqliteDatabase) -> Path:
    """The file of ``db``: snapshots are made from, and restored beside, a database file."""
    name = db.database
    if not name or name == ":memory:" or str(name).startswith("file:"):
        raise ConfigurationError(
            "snapshots need a database file", hint="open the SqliteDatabase on a path"
        )
    return Path(name).resolve()


@attrs.frozen
class Restore:
    """A restore decided on (see :func:`prepare`): :meth:`run` does it."""

    db: peewee.SqliteDatabase
    path: Path
    blobs: BlobStore
    key: SnapshotSecret
    manifest: Manifest
    tables: Sequence[str] | None
    #: an older snapshot than the latest (its claims come from its own header)
    is_older: bool = False

    def run(
        self,
        *,
        device_name: str | None = None,
        defaults: Mapping[str, Mapping[str, Any]] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> LocalState:
        """Fetch, decrypt and check the snapshot beside the database, then install it
        (see :func:`install`); ``on_bytes`` is told each chunk's size as it arrives."""
        clean_leftovers(self.path)
        with temp_beside(self.path, "restore") as plain:
            # an encrypted database's snapshot is decrypted into memory, and reaches the
            # disk only as a file encrypted under the database's key
            into = io.BytesIO() if is_encrypted(self.db) else plain
            header = fetch_and_decrypt(
                self.blobs,
                self.manifest,
                self.key,
                into,
                on_bytes=on_bytes,
                is_older=self.is_older,
            )
            if isinstance(into, io.BytesIO):
                with into.getbuffer() as image:
                    write_encrypted(self.db, image, plain)
                into.close()
            seen = self.manifest.seen_position
            if self.is_older:
                claimed = header["meta"].get("seen_position")
                seen = claimed if isinstance(claimed, str) else None
            return install(
                self.db,
                plain,
                self.tables,
                device_name=device_name,
                seen_position=seen,
                note=f"restored {self.manifest.snapshot_id}",
                defaults=defaults,
            )


def prepare(
    db: peewee.SqliteDatabase,
    blobs: BlobStore,
    key: SnapshotSecret,
    *,
    force: bool,
    tables: Sequence[str] | None = None,
    devices: Sequence[DeviceRecord] | None = None,
    snapshot_id: str | None = None,
) -> Restore:
    """Decide a restore into ``db`` without writing anything.

    Refuses (``UnsafeRestoreError``) a database holding unsynced changes, or,
    unless ``force``, synced data; with no ``tables`` (the CLI, which knows no
    models) also a database holding tables replicator does not manage. Reads
    and authenticates the manifest; with ``devices`` (the Devices collection)
    refuses a manifest rolled back behind a generation a device published.
    ``snapshot_id`` picks an older snapshot the manifest still keeps (its
    ``history``); after such a restore the next sync downloads everything since.
    """
    path = database_file(db)
    found = plan(db, tables)
    if tables is None and not found.managed:
        others = [n for n in table_names(db.execute_sql) if not n.startswith("sqlite_")]
        if others:
            raise UnsafeRestoreError(
                f"{path} holds tables replicator does not manage ({', '.join(others[:5])})",
                hint="restore into a new file, or into a database a Replicator has opened",
            )
    check(found, force=force, path=path)
    manifest, kek, kdf = open_latest(blobs, key)
    if devices is not None:
        check_not_rolled_back(manifest, devices)
    is_older = snapshot_id is not None and snapshot_id != manifest.snapshot_id
    if is_older:
        manifest = older(blobs, manifest, str(snapshot_id))
    # a key ring read now serves the fetch too (a scope's keys are read once per restore)
    resolved = key if kdf is not None else kek
    return Restore(
        db, path, blobs, resolved, manifest, None if tables is None else tuple(tables), is_older
    )


def check(found: Plan, *, force: bool, path: object) -> None:
    """Refuse a restore that would lose unsynced changes or, unless ``force``, synced data."""
    if found.pending_changes:
        raise UnsafeRestoreError(
            f"{path} holds {found.pending_changes} unsynced change(s); a restore would lose them"
        )
    if (found.synced_rows or found.downloaded) and not force:
        refusal = UnsafeRestoreError(
            f"{path} already holds synced data",
            hint="pass force=True to replace it with the snapshot",
        )
        refusal.forceable = True
        raise refusal


def install(
    db: peewee.SqliteDatabase,
    snapshot_file: Path,
    tables: Sequence[str] | None = None,
    *,
    device_name: str | None = None,
    seen_position: str | None = None,
    note: str = "",
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> LocalState:
    """Copy the synced tables and replicator's metadata from a verified snapshot file.

    ``tables`` are the synced tables to install (the models' tables); ``None``
    installs every synced table the snapshot holds, creating it from the
    snapshot's schema where the database lacks it (the CLI, which knows no
    models). ``defaults`` gives, per table, the value of each column the
    snapshot lacks (a column a newer app added; peewee defaults live in Python,
    so SQLite alone cannot fill a ``NOT NULL`` one). Returns the database's
    ``LocalState`` with a fresh identity.
    """
    if db.in_transaction():
        raise ConfigurationError("a restore cannot run inside a transaction")
    local = LocalState(db, device_name=device_name)
    if tables is not None and _holds_no_rows(db):
        _install_by_backup(db, snapshot_file)
        local = LocalState(db, device_name=device_name)
        with db.atomic():
            _new_device_state(local, seen_position, note)
        return local
    db.execute_sql(f"ATTACH DATABASE ? AS snap{attach_key(db)}", (str(snapshot_file),))
    try:
        snap_tables = set(synced_tables_in(db))
        wanted = list(tables) if tables is not None else sorted(snap_tables)
        with local.applying():
            db.execute_sql("PRAGMA defer_foreign_keys = ON")
            if tables is None:
                _create_missing(db, wanted)
            for table in reversed(_parents_first(db, wanted)):
                db.execute_sql(f'DELETE FROM main."{table}"')
            for table in _parents_first(db, wanted):
                if table in snap_tables:
                    _copy(db, table, (defaults or {}).get(table, {}))
            for table in (*CARRIED, *DEVICE_ONLY):
                db.execute_sql(f'DELETE FROM main."{table}"')
                if table in CARRIED and _has_table(db, "snap", table):
                    _copy(db, table)
            _new_device_state(local, seen_position, note)
    finally:
        db.execute_sql("DETACH DATABASE snap")
    return local


def _new_device_state(local: LocalState, seen_position: str | None, note: str) -> None:
    restamp_triggers(local.db, local.new_identity())
    local.set_device(
        seen_position=seen_position,
        registered=0,
        last_upload=None,
        last_sync=None,
        clock_offset=None,
        last_snapshot=note or None,
    )


#: replicator tables whose rows describe this installation, not data
_IDENTITY = (
    "replicator_device",
    "replicator_control",
    "replicator_schema",
    "sqlite_sequence",
    "sqlite_stat1",
)


def _holds_no_rows(db: peewee.SqliteDatabase) -> bool:
    """True when no table holds a row (replicator's identity aside): nothing to keep."""
    return all(
        name in _IDENTITY or db.execute_sql(f'SELECT 1 FROM "{name}" LIMIT 1').fetchone() is None
        for name in table_names(db.execute_sql)
    )


def _install_by_backup(db: peewee.SqliteDatabase, snapshot_file: Path) -> None:
    """Make the snapshot file the whole database, the app's (empty) schema included,
    then copy it over the live database with SQLite's backup API.

    Only for a database that holds no rows, so nothing can be lost. The backup
    writes the database in place under SQLite's locks, so every connection the
    app holds sees the restored content (a file rename would leave them on the
    old file); it costs one sequential copy instead of re-inserting every row.
    """
    live = db.connection()
    schema = live.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
        " AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    target = open_like(db, snapshot_file)  # an encrypted database's file: its key
    try:
        have = {r[0] for r in target.execute("SELECT name FROM sqlite_master")}
        target.execute("BEGIN")
        order = {"table": 0, "index": 1, "trigger": 2, "view": 3}
        for _kind, name, _table, sql in sorted(schema, key=lambda r: order.get(r[0], 9)):
            if name not in have:  # the app's own tables, and anything newer than the snapshot
                target.execute(sql)
        forget_installation(target.execute)
        target.execute("COMMIT")
        target.backup(live)
    finally:
        target.close()


def synced_tables_in(db: peewee.SqliteDatabase) -> list[str]:
    """The synced tables of the attached snapshot, which must hold replicator's metadata."""
    if not _has_table(db, "snap", "DownloadedTracker"):
        raise TamperedSnapshotError("the snapshot holds no replicator metadata")
    return synced_tables(db, "snap")


def _has_table(db: peewee.SqliteDatabase, schema: str, table: str) -> bool:
    sql = f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute_sql(sql, (table,)).fetchone() is not None


def _columns(db: peewee.SqliteDatabase, schema: str, table: str) -> list[str]:
    return [c[1] for c in db.execute_sql(f'PRAGMA {schema}.table_info("{table}")')]


def _copy(db: peewee.SqliteDatabase, table: str, defaults: Mapping[str, Any] | None = None) -> None:
    """Rows of ``snap.table`` into ``main.table``: the columns both have, and ``defaults``
    for the columns only the database has."""
    theirs = set(_columns(db, "snap", table))
    mine = _columns(db, "main", table)
    common = [c for c in mine if c in theirs]
    filled = [c for c in mine if c not in theirs and c in (defaults or {})]
    names = ", ".join(f'"{c}"' for c in (*common, *filled))
    values = ", ".join([*(f'"{c}"' for c in common), *("?" for _ in filled)])
    db.execute_sql(
        f'INSERT INTO main."{table}" ({names}) SELECT {values} FROM snap."{table}"',
        tuple((defaults or {})[c] for c in filled),
    )


def _create_missing(db: peewee.SqliteDatabase, tables: Sequence[str]) -> None:
    """Create synced tables the database lacks from the snapshot's schema (table,
    indexes and triggers)."""
    for table in tables:
        if _has_table(db, "main", table):
            continue
        rows = db.execute_sql(
            "SELECT type, sql FROM snap.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL"
            " ORDER BY type = 'table' DESC",
            (table,),
        ).fetchall()
        for _kind, sql in rows:
            db.execute_sql(sql)


def _parents_first(db: peewee.SqliteDatabase, tables: Sequence[str]) -> list[str]:
    """``tables`` ordered so that a table comes after the tables its foreign keys name."""
    refs = {
        t: {r[2] for r in db.execute_sql(f'PRAGMA main.foreign_key_list("{t}")')} & set(tables)
        for t in tables
        if _has_table(db, "main", t)
    }
    out: list[str] = []
    while len(out) < len(refs):
        ready = [t for t in refs if t not in out and refs[t] - {t} <= set(out)]
        if not ready:  # a cycle between tables: any order, foreign keys are deferred
            ready = [t for t in refs if t not in out]
        out += sorted(ready)
    return out
