"""The tables of an outbox file, and bringing a file of an earlier version up to date.

The file holds these tables, and no others (a file with any other table is
refused, so the outbox never writes into an app's database):

* ``events`` (``_id, type, key, data, timestamp, priority``): events not yet
  sent. ``key`` is unique per type while the event waits; saving again under a
  key that waits replaces (or merges into) it.
* ``processed_sync_data`` (``_id, msg_id, type, processed_data, event_count,
  priority``, ...): messages ready to send, gzipped. ``msg_id`` names a message
  everywhere, never ``_id``: SQLite gives the ``_id`` of a deleted row to the next
  insert, so another process on the file may have reused it. ``failures`` counts
  every failed attempt (a message that failed goes after those that have not),
  ``faults`` the failures that were the sink's or the message's own (neither
  unreachable nor busy), after ``Retry.attempts`` of which it is dead-lettered.
  ``claimed_until`` says that a process is sending it: the automatic deliveries
  of the others leave it alone until then (a process that dies holding a claim
  delays the message until the claim runs out, never loses it).
* ``dead_letters``: messages a sink refused for good, with the status and the
  response (status 0: the sink failed without an HTTP status; the response is
  its error), until they are requeued.
* ``outbox_configs`` and ``outbox_state``: the configurations given to
  ``Outbox.init``, and per type the last success, the last error, the next
  attempt after a failure, a pending sync request, how many events the caps
  dropped, and the totals of events (and bytes) that ever left the type
  (``removed_events``, ``removed_bytes``: only ever growing, written in the
  transaction that removes them, so each process on the file sees what the others
  delivered, dead-lettered or dropped).
* ``outbox_merged``: per key of a type with a merge function, the state the
  receiver acknowledged last, which the next save under that key merges with.
"""

from __future__ import annotations

import sqlite3

#: tables of an outbox file; any other table means the file is not an outbox's
TABLES = (
    "events",
    "processed_sync_data",
    "dead_letters",
    "outbox_configs",
    "outbox_state",
    "outbox_merged",
)

_TABLES = """
CREATE TABLE IF NOT EXISTS events (
    _id INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
    timestamp REAL NOT NULL, priority INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS processed_sync_data (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
    faults INTEGER NOT NULL DEFAULT 0, claimed_until REAL);
CREATE TABLE IF NOT EXISTS dead_letters (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL, status INTEGER NOT NULL, response TEXT NOT NULL,
    failed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_configs (type TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_merged (
    type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (type, key));
CREATE TABLE IF NOT EXISTS outbox_state (
    type TEXT PRIMARY KEY, last_success REAL, last_error TEXT, last_error_at REAL,
    next_attempt REAL, failures INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0, requested INTEGER NOT NULL DEFAULT 0,
    removed_events INTEGER NOT NULL DEFAULT 0, removed_bytes INTEGER NOT NULL DEFAULT 0);
"""

#: columns added since the first version, by table: a file of that version gets them
_ADDED = {
    "processed_sync_data": (
        ("failures", "INTEGER NOT NULL DEFAULT 0"),
        ("faults", "INTEGER NOT NULL DEFAULT 0"),
        ("claimed_until", "REAL"),
    ),
    "outbox_state": (
        ("removed_events", "INTEGER NOT NULL DEFAULT 0"),
        ("removed_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ),
}

_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS events_type_key ON events (type, key);
CREATE INDEX IF NOT EXISTS events_order ON events (type, priority DESC, _id);
CREATE INDEX IF NOT EXISTS processed_order ON processed_sync_data (type, priority DESC, _id);
CREATE INDEX IF NOT EXISTS processed_key ON processed_sync_data (type, key);
CREATE INDEX IF NOT EXISTS processed_line
    ON processed_sync_data (type, failures, priority DESC, _id);
"""


def user_tables(conn: sqlite3.Connection) -> set[str]:
    """The tables of the file, SQLite's own left out."""
    return {
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    }


def create(conn: sqlite3.Connection) -> None:
    """Create what is missing (tables, columns added since, indexes) on ``conn``, in
    autocommit mode. Columns are added in one write transaction that looks again
    first, so two processes opening an old file at once add each column once."""
    conn.executescript(_TABLES)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, columns in _ADDED.items():
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns:
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    conn.executescript(_INDEXES)
