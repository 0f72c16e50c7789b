"""The outbox's own SQLite file: its connections, its transactions, and what
each process on it knows of the others.

The tables are described in ``schema``. Each thread has a connection of its own
(WAL: saves on app threads and delivery on the worker do not block each other's
reads); the connections of ended threads are closed as new ones open. Every
write is one short ``BEGIN IMMEDIATE`` transaction, and every ``sqlite3`` error
leaves as a :class:`~replicator.errors.LocalDatabaseError` (retryable when the
file was busy).

Several processes may use one file (two apps, an app and ``replicator outbox
sync``): a message is named by its ``msg_id`` in every write after it was read
(never by its ``_id``, which SQLite reuses), acknowledged or dead-lettered at most
once (only the write that removed the row counts it), and what left a type is
added to totals in the file that each process reads to keep its counts right.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ..cipher.database import DATABASE_ERRORS, ERRORS, KeySource, connect_file
from ..errors import ConfigurationError, LocalDatabaseError, ReplicatorError
from ..sql import local_error
from .config import SyncConfiguration
from .schema import TABLES, create, user_tables
from .status import DeadLetter, TypeStatus, configurations, statuses

#: the totals of events and bytes that ever left a type (see ``schema``)
Removed = tuple[int, int]


def database_error(what: str, exc: Exception) -> LocalDatabaseError:
    """``exc`` as the error the outbox raises: retryable when the file was busy (the
    package's one rule for SQLite's troubles, ``sql.local_error``)."""
    return local_error(f"could not {what}", exc)


class PendingCounts:
    """Per type, the events not yet delivered (waiting or in messages) and their
    bytes, kept in memory so that a save checks the caps and the worker its
    thresholds without counting rows.

    What this process saves is added here; what leaves a type (delivered,
    dead-lettered, dropped, by any process) is taken from the totals the file keeps
    (:meth:`removed`, given the totals read in or after the transaction that
    removed events), so another process delivering this one's events is seen at the
    next read of one row. Events another process saves are seen at the next
    :meth:`OutboxFile.recount`. The counts may dip below zero for a moment (an
    event delivered before its save added it); :meth:`get` never says less than 0.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: per type: events, bytes, and the removed totals already taken off
        self._counts: dict[str, list[int]] = {}

    def add(self, type_: str, events: int, size: int) -> tuple[int, int]:
        """Count events that came in; returns the type's new (events, bytes)."""
        with self._lock:
            counts = self._counts.setdefault(type_, [0, 0, 0, 0])
            counts[0] += events
            counts[1] += size
            return max(0, counts[0]), max(0, counts[1])

    def removed(self, type_: str, totals: Removed) -> None:
        """Take off what left ``type_`` since the totals last seen (``totals`` read
        from the file; older totals than those seen change nothing)."""
        with self._lock:
            counts = self._counts.setdefault(type_, [0, 0, 0, 0])
            for i in (0, 1):
                if totals[i] > counts[2 + i]:
                    counts[i] -= totals[i] - counts[2 + i]
                    counts[2 + i] = totals[i]

    def get(self, type_: str) -> tuple[int, int]:
        with self._lock:
            counts = self._counts.get(type_, [0, 0])
            return max(0, counts[0]), max(0, counts[1])

    def reset(self, rows: Iterable[tuple[str, int, int, int, int]]) -> None:
        """Replace every count: (type, events, bytes, removed events, removed bytes)."""
        with self._lock:
            self._counts = {t: [int(n), int(b), int(re), int(rb)] for t, n, b, re, rb in rows}


class OutboxFile:
    """The SQLite file at ``path``, created if missing (a file of an earlier version
    is brought up to date); ``timeout`` is how long a write waits for another
    writer, ``durable`` makes each commit survive a power cut (``synchronous=FULL``)
    instead of a crash of the process only."""

    def __init__(
        self, path: Path, *, timeout: float, durable: bool, key: KeySource | None = None
    ) -> None:
        self.path = path
        self._key = key  # an encrypted outbox (SQLCipher): the key, asked per connection
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
            with self.mapped("open the outbox"):
                conn.execute("PRAGMA journal_mode=WAL")  # kept by the file: once is enough
                create(conn)
        except ReplicatorError:
            self.close()
            raise
        self.recount()

    # -- connections -------------------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (in autocommit mode: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if self._closed:
            if conn is not None:  # left open by close(): this thread may have been using it
                self._local.conn = None
                with contextlib.suppress(*ERRORS):
                    conn.close()
            raise ConfigurationError("the outbox is closed", hint="open a new Outbox")
        if conn is not None:
            return conn
        try:
            conn = connect_file(
                str(self.path),
                self._key,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except DATABASE_ERRORS as exc:
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
                    with contextlib.suppress(*ERRORS):
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
            names = user_tables(conn)
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
        except DATABASE_ERRORS as exc:
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
        """Count the pending events of every type from the tables, with the removed
        totals of the same moment (one read transaction)."""
        conn = self.conn()
        with self.mapped("count pending events"):
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    "SELECT type, SUM(n), SUM(b), SUM(re), SUM(rb) FROM ("
                    " SELECT type, COUNT(*) AS n, SUM(length(data)) AS b, 0 AS re, 0 AS rb"
                    " FROM events GROUP BY type"
                    " UNION ALL SELECT type, SUM(event_count), SUM(size), 0, 0"
                    " FROM processed_sync_data GROUP BY type"
                    " UNION ALL SELECT type, 0, 0, removed_events, removed_bytes"
                    " FROM outbox_state) GROUP BY type"
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        self.counts.reset((t, n or 0, b or 0, re or 0, rb or 0) for t, n, b, re, rb in rows)

    def refresh(self, type_: str) -> None:
        """Take off the counts of ``type_`` what left it since last seen, by this
        process or another (one row read)."""
        with self.mapped("read the outbox state"):
            row = (
                self.conn()
                .execute(
                    "SELECT removed_events, removed_bytes FROM outbox_state WHERE type = ?",
                    (type_,),
                )
                .fetchone()
            )
        if row is not None:
            self.counts.removed(type_, (row[0], row[1]))

    def close(self) -> None:
        """Close this thread's connection and those of ended threads; later use
        raises ``ConfigurationError``. A connection of another live thread is left
        to it (closed at its next use, or when the thread ends): closing a
        connection while another thread runs a statement on it crashes the process."""
        self._closed = True
        with self._registry:
            me = threading.current_thread()
            for thread, conn in self._connections:
                if thread is me or not thread.is_alive():
                    with contextlib.suppress(*ERRORS):
                        conn.close()
            self._connections.clear()
        self._local.conn = None

    # -- configurations --------------------------------------------------------------------

    def stored_configurations(self) -> dict[str, SyncConfiguration]:
        """The configurations last stored; one that no longer reads is left out."""
        with self.mapped("open the outbox"):
            return configurations(self.conn())

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

    # -- messages, dead letters, status ------------------------------------------------

    def count_failure(self, msg_id: str, *, fault: bool) -> int:
        """One more failed attempt at the message ``msg_id`` (a ``fault`` when it was
        the sink's or the message's own), and its claim let go; returns its faults so
        far (0 when another process removed the message meanwhile)."""
        with self.transaction("count a failed attempt") as conn:
            row = conn.execute(
                "UPDATE processed_sync_data SET failures = failures + 1, faults = faults + ?,"
                " claimed_until = NULL WHERE msg_id = ? RETURNING faults",
                (int(fault), msg_id),
            ).fetchone()
        return int(row[0]) if row else 0

    def release(self, msg_id: str) -> None:
        """Let go of the claim on the message ``msg_id`` (no failure counted)."""
        with self.transaction("let go of a message") as conn:
            conn.execute(
                "UPDATE processed_sync_data SET claimed_until = NULL WHERE msg_id = ?", (msg_id,)
            )

    def move_to_dead_letters(self, msg_id: str, status: int, response: str) -> bool:
        """Move the message ``msg_id`` to the dead letters, with the status and the
        response of its refusal; False when it was no longer in line (another
        process acknowledged or dead-lettered it)."""
        with self.transaction("dead-letter a message") as conn:
            row = conn.execute(
                "SELECT type, event_count, size FROM processed_sync_data WHERE msg_id = ?",
                (msg_id,),
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                "INSERT INTO dead_letters (msg_id, type, processed_data, event_count, priority,"
                " key, size, status, response, failed_at)"
                " SELECT msg_id, type, processed_data, event_count, priority, key, size, ?, ?, ?"
                " FROM processed_sync_data WHERE msg_id = ?",
                (status, response, time.time(), msg_id),
            )
            conn.execute("DELETE FROM processed_sync_data WHERE msg_id = ?", (msg_id,))
            totals = note_removed(conn, row[0], row[1], row[2])
        self.counts.removed(row[0], totals)
        return True

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
        line, with their ``msg_id`` and no failure counted; returns how many
        messages went back."""
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


def note_removed(
    conn: sqlite3.Connection, type_: str, events: int, size: int, *, dropped: bool = False
) -> Removed:
    """Add ``events`` and their ``size`` to what left ``type_`` (and to what the caps
    dropped, when ``dropped``), in the caller's transaction, the one that removed
    them; returns the new totals, for :meth:`PendingCounts.removed` once committed."""
    _state(conn, type_)
    row = conn.execute(
        "UPDATE outbox_state SET removed_events = removed_events + ?,"
        " removed_bytes = removed_bytes + ?, dropped = dropped + ? WHERE type = ?"
        " RETURNING removed_events, removed_bytes",
        (events, size, events if dropped else 0, type_),
    ).fetchone()
    return int(row[0]), int(row[1])


def removed_totals(conn: sqlite3.Connection, type_: str) -> Removed:
    """The totals of what left ``type_`` (zeros for a type without state)."""
    row = conn.execute(
        "SELECT removed_events, removed_bytes FROM outbox_state WHERE type = ?", (type_,)
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _state(conn: sqlite3.Connection, type_: str) -> None:
    """Make sure ``type_`` has its row in ``outbox_state``."""
    conn.execute("INSERT OR IGNORE INTO outbox_state (type) VALUES (?)", (type_,))
