"""The outbox's own SQLite file: its tables, its connections, and what it tells.

The file holds these tables, and no others (a file with any other table is
refused, so the outbox never writes into an app's database):

* ``events`` (``_id, type, key, data, timestamp, priority``): events not yet
  sent. ``key`` is unique per type while the event waits; saving again under a
  key that waits replaces (or merges into) it.
* ``processed_sync_data`` (``_id, msg_id, type, processed_data, event_count,
  priority``): messages ready to send, gzipped. A batched type's events move
  here in batches, in the same transaction that deletes them from ``events``, so
  an event is always in exactly one place; a message is deleted only after the
  sink acknowledged it, and keeps its ``msg_id`` on every attempt.
* ``dead_letters``: messages a sink refused for good (a 4xx), with the status
  and the response, until :meth:`OutboxFile.requeue` puts them back in line.
* ``outbox_configs`` and ``outbox_state``: the configurations given to
  :meth:`Outbox.init` (so a restarted process or the CLI can deliver before the
  app calls ``init`` again), and per type the last success, the last error, the
  next attempt after a failure, a pending sync request, and how many events the
  caps dropped.
* ``outbox_merged``: per key of a type with a merge function, the state the
  receiver acknowledged last, which the next save under that key merges with.

Each thread has a connection of its own (WAL: saves on app threads and delivery
on the worker do not block each other's reads); the connections of ended threads
are closed as new ones open. Every write is one short ``BEGIN IMMEDIATE``
transaction, and every ``sqlite3`` error leaves as a
:class:`~replicator.errors.LocalDatabaseError` (retryable when the file was busy).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import attrs

from ..errors import ConfigurationError, LocalDatabaseError, ReplicatorError
from ..sql import local_error
from .config import SyncConfiguration

#: tables of an outbox file; any other table means the file is not an outbox's
TABLES = (
    "events",
    "processed_sync_data",
    "dead_letters",
    "outbox_configs",
    "outbox_state",
    "outbox_merged",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    _id INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
    timestamp REAL NOT NULL, priority INTEGER NOT NULL DEFAULT 0);
CREATE UNIQUE INDEX IF NOT EXISTS events_type_key ON events (type, key);
CREATE INDEX IF NOT EXISTS events_order ON events (type, priority DESC, _id);
CREATE TABLE IF NOT EXISTS processed_sync_data (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS processed_order ON processed_sync_data (type, priority DESC, _id);
CREATE INDEX IF NOT EXISTS processed_key ON processed_sync_data (type, key);
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
    dropped INTEGER NOT NULL DEFAULT 0, requested INTEGER NOT NULL DEFAULT 0);
"""


def database_error(what: str, exc: sqlite3.DatabaseError) -> LocalDatabaseError:
    """``exc`` as the error the outbox raises: retryable when the file was busy (the
    package's one rule for SQLite's troubles, ``sql.local_error``)."""
    return local_error(f"could not {what}", exc)


@attrs.frozen
class TypeStatus:
    """Where one type stands: events not yet delivered (waiting, or in a message
    ready to send) and their bytes, messages ready to send, dead letters, events
    the caps dropped, and the times of the last success, the last error and the
    next attempt (seconds since the epoch, or ``None``)."""

    type: str
    configured: bool
    pending_events: int
    pending_bytes: int
    messages: int
    dead_letters: int
    dropped: int
    last_success: float | None
    last_error: str | None
    next_attempt: float | None


@attrs.frozen
class DeadLetter:
    """A message a sink refused for good: its id, type and events, the status and
    the response of the refusal, and when it came."""

    msg_id: str
    type: str
    event_count: int
    status: int
    response: str
    failed_at: float


class PendingCounts:
    """Per type, the events not yet delivered (waiting or in messages) and their
    bytes, kept in memory so that a save checks the caps and the worker its
    thresholds without counting rows. Exact for what this process does; another
    process on the same file is seen at the next :meth:`OutboxFile.recount`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}

    def add(self, type_: str, events: int, size: int) -> tuple[int, int]:
        """Count events that came in; returns the type's new (events, bytes)."""
        with self._lock:
            counts = self._counts.setdefault(type_, [0, 0])
            counts[0] += events
            counts[1] += size
            return counts[0], counts[1]

    def remove(self, type_: str, events: int, size: int) -> None:
        """Events that left the outbox (delivered, dead-lettered or dropped)."""
        with self._lock:
            counts = self._counts.setdefault(type_, [0, 0])
            counts[0] = max(0, counts[0] - events)
            counts[1] = max(0, counts[1] - size)

    def get(self, type_: str) -> tuple[int, int]:
        with self._lock:
            events, size = self._counts.get(type_, (0, 0))
            return events, size

    def reset(self, rows: Iterable[tuple[str, int | None, int | None]]) -> None:
        with self._lock:
            self._counts = {t: [int(n or 0), int(b or 0)] for t, n, b in rows}


class OutboxFile:
    """The SQLite file at ``path``, created if missing; ``timeout`` is how long a
    write waits for another writer, ``durable`` makes each commit survive a power
    cut (``synchronous=FULL``) instead of a crash of the process only."""

    def __init__(self, path: Path, *, timeout: float, durable: bool) -> None:
        self.path = path
        self.timeout = timeout
        self.counts = PendingCounts()
        self._synchronous = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._registry = threading.Lock()
        self._closed = False
        conn = self.conn()
        try:
            self._check_file(conn)
        except ReplicatorError:
            self.close()
            raise
        with self.mapped("open the outbox"):
            conn.execute("PRAGMA journal_mode=WAL")  # kept by the file: once is enough
            conn.executescript(_SCHEMA)
        self.recount()

    # -- connections -------------------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (in autocommit mode: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise ConfigurationError("the outbox is closed", hint="open a new Outbox")
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.DatabaseError as exc:
            raise LocalDatabaseError(
                f"{self.path} cannot be opened as an outbox: {exc}", retryable=False, orig=exc
            ) from exc
        self._local.conn = conn
        with self._registry:
            # close the connections of threads that have ended (an app that saves
            # from short-lived threads would otherwise keep one file handle per thread)
            alive = []
            for thread, other in self._connections:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    with contextlib.suppress(sqlite3.Error):
                        other.close()
            self._connections = [*alive, (threading.current_thread(), conn)]
        return conn

    def open_connections(self) -> int:
        """How many connections are open: one per thread that used the file, those
        of ended threads until the next thread connects."""
        with self._registry:
            return len(self._connections)

    def _check_file(self, conn: sqlite3.Connection) -> None:
        with self.mapped("read the outbox"):
            names = {
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")
            }
        foreign = sorted(names - set(TABLES))
        if foreign:
            raise ConfigurationError(
                f"{self.path} holds tables that are not an outbox's ({', '.join(foreign[:5])})",
                hint="give the outbox a file of its own, never the app's database",
            )

    @contextlib.contextmanager
    def mapped(self, what: str) -> Iterator[None]:
        """Raise a ``sqlite3`` error of the block as a :class:`LocalDatabaseError`
        saying what could not be done."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise database_error(what, exc) from exc

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction on this thread's connection, rolled back if the
        block raises anything."""
        conn = self.conn()
        with self.mapped(what):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def recount(self) -> None:
        """Count the pending events of every type from the tables."""
        with self.mapped("count pending events"):
            rows = (
                self.conn()
                .execute(
                    "SELECT type, SUM(n), SUM(b) FROM ("
                    " SELECT type, COUNT(*) AS n, SUM(length(data)) AS b FROM events GROUP BY type"
                    " UNION ALL SELECT type, SUM(event_count), SUM(size)"
                    " FROM processed_sync_data GROUP BY type) GROUP BY type"
                )
                .fetchall()
            )
        self.counts.reset(rows)

    def close(self) -> None:
        """Close every thread's connection; later use raises ``ConfigurationError``."""
        self._closed = True
        with self._registry:
            for _thread, conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()

    # -- configurations --------------------------------------------------------------------

    def stored_configurations(self) -> dict[str, SyncConfiguration]:
        """The configurations last stored; one that no longer reads is left out."""
        with self.mapped("open the outbox"):
            return _configurations(self.conn())

    def store_configurations(self, configs: Mapping[str, SyncConfiguration]) -> None:
        """Replace the stored configurations with ``configs``."""
        with self.transaction("store the configurations") as conn:
            conn.execute("DELETE FROM outbox_configs")
            conn.executemany(
                "INSERT INTO outbox_configs (type, config) VALUES (?, ?)",
                [(t, json.dumps(c.to_dict())) for t, c in configs.items()],
            )

    # -- per type state ------------------------------------------------------------------

    def request_sync(self, type_: str) -> None:
        """Note that the worker is to sync ``type_`` until a sync succeeds."""
        with self.transaction("record a sync request") as conn:
            _state(conn, type_)
            conn.execute("UPDATE outbox_state SET requested = 1 WHERE type = ?", (type_,))

    def record_success(self, type_: str) -> None:
        """A sync of ``type_`` succeeded: no failures, no next attempt, no request."""
        with self.transaction("record a success") as conn:
            _state(conn, type_)
            conn.execute(
                "UPDATE outbox_state SET last_success = ?, failures = 0, next_attempt = NULL,"
                " requested = 0 WHERE type = ?",
                (time.time(), type_),
            )

    def record_failure(
        self, type_: str, error: str, backoff: Callable[[int], float]
    ) -> tuple[int, float]:
        """A sync of ``type_`` failed with ``error``: count the failure and set the
        next attempt ``backoff(failures in a row)`` seconds from now; returns the
        failures in a row and that wait."""
        with self.transaction("record a failure") as conn:
            _state(conn, type_)
            failures: int = conn.execute(
                "UPDATE outbox_state SET failures = failures + 1, last_error = ?,"
                " last_error_at = ? WHERE type = ? RETURNING failures",
                (error[:500], time.time(), type_),
            ).fetchone()[0]
            wait = backoff(failures)
            conn.execute(
                "UPDATE outbox_state SET next_attempt = ? WHERE type = ?",
                (time.time() + wait, type_),
            )
        return failures, wait

    def schedule_states(self) -> dict[str, tuple[float | None, int]]:
        """Per type with a state: its next attempt (or ``None``) and whether a sync
        was requested (1) or not (0)."""
        with self.mapped("read the outbox state"):
            rows = (
                self.conn()
                .execute("SELECT type, next_attempt, requested FROM outbox_state")
                .fetchall()
            )
        return {t: (n, r) for t, n, r in rows}

    def top_priority(self, type_: str) -> int:
        """The highest priority of the undelivered events of ``type_`` (0 if none)."""
        with self.mapped("read the outbox"):
            row = (
                self.conn()
                .execute(
                    "SELECT MAX(p) FROM (SELECT MAX(priority) AS p FROM events WHERE type = ?"
                    " UNION ALL SELECT MAX(priority) FROM processed_sync_data WHERE type = ?)",
                    (type_, type_),
                )
                .fetchone()
            )
        return int(row[0] or 0)

    # -- dead letters, status ------------------------------------------------------------

    def move_to_dead_letters(self, message_id: int, status: int, response: str) -> None:
        """Move the message of row ``message_id`` to the dead letters, with the
        status and the response of its refusal."""
        with self.transaction("dead-letter a message") as conn:
            conn.execute(
                "INSERT INTO dead_letters (msg_id, type, processed_data, event_count, priority,"
                " key, size, status, response, failed_at)"
                " SELECT msg_id, type, processed_data, event_count, priority, key, size, ?, ?, ?"
                " FROM processed_sync_data WHERE _id = ?",
                (status, response, time.time(), message_id),
            )
            conn.execute("DELETE FROM processed_sync_data WHERE _id = ?", (message_id,))

    def dead_letters(self, type_: str | None = None) -> list[DeadLetter]:
        """The messages a sink refused (of ``type_``, or all), oldest first."""
        sql = (
            "SELECT msg_id, type, event_count, status, response, failed_at FROM dead_letters"
            + (" WHERE type = ?" if type_ is not None else "")
            + " ORDER BY _id"
        )
        with self.mapped("read the dead letters"):
            rows = self.conn().execute(sql, (type_,) if type_ is not None else ()).fetchall()
        return [DeadLetter(*row) for row in rows]

    def requeue(self, type_: str | None = None, msg_ids: Sequence[str] | None = None) -> int:
        """Put dead letters (of one type, or the ``msg_ids`` named, or all) back in
        line, with their ``msg_id``; returns how many messages went back."""
        where, args = ["1"], []
        if type_ is not None:
            where.append("type = ?")
            args.append(type_)
        if msg_ids is not None:
            where.append("msg_id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(msg_ids)))
        condition = " AND ".join(where)
        with self.transaction("requeue dead letters") as conn:
            moved: int = conn.execute(
                "INSERT INTO processed_sync_data"
                " (msg_id, type, processed_data, event_count, priority, key, size)"
                " SELECT msg_id, type, processed_data, event_count, priority, key, size"
                f" FROM dead_letters WHERE {condition} ORDER BY _id",
                args,
            ).rowcount
            conn.execute(f"DELETE FROM dead_letters WHERE {condition}", args)
        self.recount()
        return moved

    def status(self, type_: str | None, configured: Collection[str]) -> dict[str, TypeStatus]:
        """Per type (``type_`` alone, or every type ``configured`` or holding
        anything): see :class:`TypeStatus`."""
        with self.mapped("read the outbox status"):
            return statuses(self.conn(), type_, configured)


def statuses(
    conn: sqlite3.Connection, type_: str | None, configured: Collection[str]
) -> dict[str, TypeStatus]:
    """See :meth:`OutboxFile.status`; only reads, on ``conn``."""
    if type_ is not None:  # one type (every sync asks): no walk of the tables
        types = {type_}
    else:
        types = set(configured)
        for table in ("events", "processed_sync_data", "dead_letters", "outbox_state"):
            types.update(r[0] for r in conn.execute(f"SELECT DISTINCT type FROM {table}"))
    return {t: _type_status(conn, t, t in configured) for t in sorted(types)}


def _configurations(conn: sqlite3.Connection) -> dict[str, SyncConfiguration]:
    configs: dict[str, SyncConfiguration] = {}
    for type_, text in conn.execute("SELECT type, config FROM outbox_configs").fetchall():
        with contextlib.suppress(ConfigurationError, ValueError):
            configs[type_] = SyncConfiguration.from_dict(json.loads(text))
    return configs


def read_status(path: Path) -> dict[str, TypeStatus]:
    """The status of the outbox file at ``path`` (as :meth:`OutboxFile.status`), read on
    a read-only connection: looking at a file never creates or changes a table in it.

    A file that does not hold an outbox's tables, or holds others, is a
    ``ConfigurationError`` naming it.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise database_error(f"open {path}", exc) from exc
    try:
        try:
            names = {
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")
            }
        except sqlite3.DatabaseError as exc:
            raise database_error(f"read {path}", exc) from exc
        if not names:
            raise ConfigurationError(
                f"{path} is not an outbox file: it holds no table",
                hint="name the file the app gives Outbox(...)",
            )
        foreign = sorted(names - set(TABLES))
        if foreign:
            raise ConfigurationError(
                f"{path} is not an outbox file: it holds tables that are not an outbox's"
                f" ({', '.join(foreign[:5])})",
                hint="name the file the app gives Outbox(...), a file of its own",
            )
        missing = sorted(set(TABLES) - names)
        if missing:
            raise ConfigurationError(
                f"{path} is an outbox file of an earlier version (no {', '.join(missing)})",
                hint=f"open it once with Outbox({str(path)!r}), or replicator outbox sync,"
                " to bring it up to date",
            )
        try:
            return statuses(conn, None, _configurations(conn))
        except sqlite3.DatabaseError as exc:
            raise database_error(f"read {path}", exc) from exc
    finally:
        conn.close()


def count_dropped(conn: sqlite3.Connection, type_: str, dropped: int) -> None:
    """Add ``dropped`` to the events of ``type_`` the caps dropped (in the caller's
    transaction, the one that dropped them)."""
    _state(conn, type_)
    conn.execute(
        "UPDATE outbox_state SET dropped = dropped + ? WHERE type = ?",
        (dropped, type_),
    )


def _type_status(conn: sqlite3.Connection, type_: str, configured: bool) -> TypeStatus:
    events, size = _counts(conn, type_)
    messages = conn.execute(
        "SELECT COUNT(*) FROM processed_sync_data WHERE type = ?", (type_,)
    ).fetchone()[0]
    dead = conn.execute("SELECT COUNT(*) FROM dead_letters WHERE type = ?", (type_,)).fetchone()[0]
    state = conn.execute(
        "SELECT dropped, last_success, last_error, next_attempt FROM outbox_state WHERE type = ?",
        (type_,),
    ).fetchone() or (0, None, None, None)
    return TypeStatus(type_, configured, events, size, messages, dead, *state)


def _counts(conn: sqlite3.Connection, type_: str) -> tuple[int, int]:
    n, b = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM events WHERE type = ?", (type_,)
    ).fetchone()
    bn, bb = conn.execute(
        "SELECT COALESCE(SUM(event_count), 0), COALESCE(SUM(size), 0)"
        " FROM processed_sync_data WHERE type = ?",
        (type_,),
    ).fetchone()
    return int(n + bn), int(b + bb)


def _state(conn: sqlite3.Connection, type_: str) -> None:
    """Make sure ``type_`` has its row in ``outbox_state``."""
    conn.execute("INSERT OR IGNORE INTO outbox_state (type) VALUES (?)", (type_,))
