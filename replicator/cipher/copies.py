"""Plaintext SQLite images of an encrypted database, in memory only.

A snapshot is a plain SQLite file sealed under the snapshot key, so that a device
restores it whatever its own database key (or none). A plain device makes that
file beside its database; an encrypted device must never write those bytes to
disk. So here:

* publishing copies the synced tables and replicator's metadata, inside one read
  transaction of the database's connection, into an in-memory SQLite database
  and hands out its serialized bytes (:func:`plain_image`), which the snapshot
  code encrypts straight from memory;
* restoring decrypts the download into memory, loads it
  (:func:`load_image`, which runs ``quick_check``) and copies it into a file
  encrypted under the database's own key (:func:`write_encrypted`), which the
  restore then installs as it installs a plain file.

The cost is memory: about three times the snapshot's size for the time of the copy
(measured: a 67 MB database grew a publishing or restoring process by ~200 MB).
Rows are copied table by table with the columns SQLite stores (generated ones
are computed again), tables first, then their rows, then indexes and triggers
(so no trigger fires during the copy).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import peewee

from ..errors import ConfigurationError, TamperedSnapshotError
from ..local import OWN_TABLES, forget_installation
from .database import EncryptedDatabase, is_encrypted, key_pragma, resolve, unlock

Execute = Callable[..., Any]

_ORDER = {"table": 0, "index": 1, "trigger": 2}
_BATCH = 2000


def _require_serialize() -> None:
    if not hasattr(sqlite3.Connection, "serialize"):  # Python 3.10
        raise ConfigurationError(
            "snapshots of an encrypted database need Python 3.11 or later",
            hint="run the app on Python 3.11+ (sqlite3.Connection.serialize)",
        )


def _memory() -> sqlite3.Connection:
    """An in-memory database whose sorts and indexes never spill to a temporary file
    (sqlite3's default ``temp_store`` writes them to ``TMPDIR``, in plain)."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    memory.execute("PRAGMA temp_store = MEMORY")
    return memory


def copy_database(read: Execute, write: Any, keep: Collection[str] | None = None) -> None:
    """Copy the tables named in ``keep`` (``None``: every table) with their rows,
    indexes and triggers from the connection behind ``read`` into the empty
    database of the connection ``write``; views and SQLite's own tables aside."""
    schema = [
        r
        for r in read(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            " AND name NOT LIKE 'sqlite_%' AND type != 'view'"
        ).fetchall()
        if keep is None or r[2] in keep
    ]
    schema.sort(key=lambda r: _ORDER.get(r[0], 9))
    tables = [r[1] for r in schema if r[0] == "table"]
    write.execute("BEGIN")
    for kind, _name, _table, sql in schema:
        if kind == "table":
            write.execute(sql)
    for table in tables:
        _copy_rows(read, write, table)
    _copy_sequences(read, write, tables)
    for kind, _name, _table, sql in schema:
        if kind != "table":
            write.execute(sql)
    (version,) = read("PRAGMA user_version").fetchone()
    write.execute(f"PRAGMA user_version = {int(version)}")
    write.execute("COMMIT")


def _copy_rows(read: Execute, write: Any, table: str) -> None:
    columns = [c[1] for c in read(f'PRAGMA table_xinfo("{table}")') if c[6] == 0]
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("?" for _ in columns)
    cursor = read(f'SELECT {names} FROM "{table}"')
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'
    while batch := cursor.fetchmany(_BATCH):
        write.executemany(insert, batch)


def _copy_sequences(read: Execute, write: Any, tables: Iterable[str]) -> None:
    has = read("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    if has is None:
        return
    wanted = set(tables)
    for name, seq in read("SELECT name, seq FROM sqlite_sequence").fetchall():
        if name in wanted:
            write.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))


def plain_image(connection: Any, tables: Collection[str]) -> bytes:
    """The plaintext SQLite file a snapshot holds, made in memory from ``connection``
    (an encrypted database's): the synced ``tables`` and replicator's metadata, from
    one read transaction, without device-local state. Nothing is written to disk."""
    _require_serialize()
    memory = _memory()
    try:
        connection.execute("SAVEPOINT replicator_plain_image")  # one consistent read
        try:
            copy_database(connection.execute, memory, {*tables, *OWN_TABLES})
        finally:
            connection.execute("RELEASE replicator_plain_image")
        memory.execute("BEGIN")
        forget_installation(memory.execute)
        memory.execute("COMMIT")
        image: bytes = memory.serialize()  # type: ignore[attr-defined,unused-ignore]
        return image
    finally:
        memory.close()


def load_image(data: bytes | memoryview) -> sqlite3.Connection:
    """An in-memory database holding the snapshot file ``data``, which must pass
    SQLite's ``quick_check`` (else ``TamperedSnapshotError``)."""
    _require_serialize()
    memory = _memory()
    try:
        memory.deserialize(data)  # type: ignore[attr-defined,unused-ignore]
        (result,) = memory.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        memory.close()
        raise TamperedSnapshotError(f"the restored file is not a SQLite database: {exc}") from exc
    if result != "ok":
        memory.close()
        raise TamperedSnapshotError(f"the restored database fails its integrity check: {result}")
    return memory


def open_like(db: peewee.SqliteDatabase, path: Path) -> Any:
    """A new connection to ``path`` with ``db``'s driver and key: SQLCipher under the
    same key for an encrypted database (a file it makes is encrypted), else sqlite3."""
    if not is_encrypted(db):
        return sqlite3.connect(path, isolation_level=None)
    from .database import require_sqlcipher

    driver = require_sqlcipher()
    conn = driver.connect(str(path), isolation_level=None)
    try:
        if isinstance(db, EncryptedDatabase):
            unlock(conn, resolve(db.key_source), str(path))
        else:  # peewee's own SqlCipherDatabase, keyed by a passphrase
            passphrase = db.connect_params.get("passphrase") or ""
            conn.execute("PRAGMA cipher_log_level = NONE")
            if passphrase:
                conn.execute(f"PRAGMA key = {key_pragma(passphrase)}")
            conn.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        conn.close()
        raise
    return conn


def write_encrypted(db: peewee.SqliteDatabase, data: bytes | memoryview, dest: Path) -> None:
    """Check the snapshot file ``data`` (:func:`load_image`) and copy it into ``dest``,
    a new file encrypted under ``db``'s key."""
    memory = load_image(data)
    try:
        target = open_like(db, dest)
        try:
            # a temporary file, discarded if anything fails: no journal, no fsync, and
            # pages encrypted once each, when written, not again at each eviction
            for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -65536"):
                target.execute(f"PRAGMA {pragma}")
            copy_database(memory.execute, target)
        finally:
            target.close()
    finally:
        memory.close()
