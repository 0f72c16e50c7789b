"""Putting events in line: a save, coalescing under a key, and the caps.

Invariants:

* an event is stored as JSON text, exactly as it will be sent: data that is no
  JSON value (or text or bytes that are not JSON, or text that is not valid
  Unicode: a lone surrogate), a key that is not valid Unicode, and an event larger
  than the type's byte cap (it could never fit: it would push out every other
  event, then itself) are an :class:`~replicator.errors.EventError` and nothing is
  stored;
* a save is one short transaction (a plain insert without a key), committed before
  :meth:`EventQueue.put` returns; it never sends anything;
* under a key, one event per type waits: a later save replaces it, or the type's
  merge function combines the two, keeping the higher priority. With a merge
  function a save merges with whatever is latest for the key: the waiting event,
  else the message still waiting for its acknowledgement, else the state last
  acknowledged, so every message of a key carries its full merged state;
* past a cap (events, or bytes, of one type not yet delivered) the oldest event of
  the lowest priority is dropped first, whole messages once no event waits; drops
  are counted in the file and logged, never silent. Before it drops, it takes
  into account what other processes on the file delivered meanwhile, so a
  process never drops events for counts that are no longer true.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any

from ..cipher.database import DATABASE_ERRORS
from ..errors import EventError
from .setup import Merge
from .store import OutboxFile, database_error, note_removed, removed_totals

log = logging.getLogger(__name__)

#: one encoder for every save (``json.dumps`` with options builds a new one per call)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class EventQueue:
    """Saves events into ``file`` and keeps each type within ``max_pending`` events
    and ``max_pending_bytes`` bytes not yet delivered."""

    def __init__(self, file: OutboxFile, *, max_pending: int, max_pending_bytes: int) -> None:
        self.file = file
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._drop_lock = threading.Lock()

    def put(
        self,
        type_: str,
        data: Any,
        *,
        key: str | None = None,
        priority: int = 0,
        merge: Merge | None = None,
    ) -> tuple[str, int]:
        """Store one event of ``type_``; returns its key (a new random one when
        ``key`` is ``None``) and the events of the type now waiting for delivery."""
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise EventError(f"priority must be an integer, got {priority!r}")
        text = self._fitting(type_, _json_text(data))
        if key is not None and (not isinstance(key, str) or not key):
            raise EventError(f"key must be a non-empty string, got {key!r}")
        if key is not None:
            _check_unicode("key", key)
        now = time.time()
        if key is None:
            key = os.urandom(16).hex()  # 128 random bits, cheaper than a uuid4 object
            self._insert(type_, key, text, now, priority)
            added, added_bytes = 1, len(text)
        else:
            added, added_bytes = self._put_keyed(type_, key, text, now, priority, merge)
        events, size = self.file.counts.add(type_, added, added_bytes)
        if events > self.max_pending or size > self.max_pending_bytes:
            self.drop_excess(type_)
        return key, events

    def _fitting(self, type_: str, text: str) -> str:
        """``text`` if one event of it fits under the byte cap of ``type_``; an
        :class:`EventError` if it never can."""
        if len(text) > self.max_pending_bytes:
            raise EventError(
                f"an event of {type_} of {len(text):,} bytes can never fit under the"
                f" outbox's max_pending_bytes of {self.max_pending_bytes:,}",
                hint="send large data another way (a file, a blob) and save a reference,"
                " or give the Outbox a larger max_pending_bytes",
            )
        return text

    def _insert(self, type_: str, key: str, text: str, now: float, priority: int) -> None:
        # no explicit transaction: one statement in autocommit mode is one
        try:
            self.file.conn().execute(
                "INSERT INTO events (type, key, data, timestamp, priority) VALUES (?, ?, ?, ?, ?)",
                (type_, key, text, now, priority),
            )
        except DATABASE_ERRORS as exc:
            raise database_error("save an event", exc) from exc

    def _put_keyed(
        self, type_: str, key: str, text: str, now: float, priority: int, merge: Merge | None
    ) -> tuple[int, int]:
        """Save under ``key``: a new waiting event, or the one that waits rewritten;
        returns the events and bytes this added."""
        with self.file.transaction("save an event") as conn:
            row = conn.execute(
                "SELECT _id, data, priority FROM events WHERE type = ? AND key = ?", (type_, key)
            ).fetchone()
            if merge is not None:
                earlier = row[1] if row else _latest_sent(conn, type_, key)
                if earlier is not None:
                    text = self._fitting(type_, _merged(type_, merge, earlier, text))
            if row is None:
                conn.execute(
                    "INSERT INTO events (type, key, data, timestamp, priority)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (type_, key, text, now, priority),
                )
                return 1, len(text)
            conn.execute(
                "UPDATE events SET data = ?, timestamp = ?, priority = ? WHERE _id = ?",
                (text, now, max(priority, row[2]), row[0]),
            )
            return 0, len(text) - len(row[1])

    def drop_excess(self, type_: str) -> None:
        """Drop the oldest events of the lowest priority (whole messages once no event
        waits) until the type is within its caps; count and log what went. Works from
        the in-memory counts and the indexes: a few rows read per drop, whatever the
        backlog."""
        dropped = dropped_bytes = 0
        with self._drop_lock, self.file.transaction("drop events over the cap") as conn:
            # what other processes delivered meanwhile first: never drop for stale counts
            self.file.counts.removed(type_, removed_totals(conn, type_))
            events, size = self.file.counts.get(type_)
            while (
                events - dropped > self.max_pending or size - dropped_bytes > self.max_pending_bytes
            ):
                gone = _lowest(conn, "events", type_, "1, length(data)")
                if gone is None:
                    gone = _lowest(conn, "processed_sync_data", type_, "event_count, size")
                    if gone is None:
                        break
                dropped += gone[0]
                dropped_bytes += gone[1]
            if dropped:
                totals = note_removed(conn, type_, dropped, dropped_bytes, dropped=True)
        if not dropped:
            return
        self.file.counts.removed(type_, totals)
        log.warning(
            "outbox %s is over its cap (%d events, %d bytes): dropped %d oldest"
            " lowest-priority event(s)",
            type_,
            self.max_pending,
            self.max_pending_bytes,
            dropped,
        )


def _check_unicode(what: str, text: str) -> None:
    """Refuse text SQLite cannot store: a lone surrogate (from a badly decoded
    string) has no UTF-8 form. ASCII text is checked for free."""
    if text.isascii():
        return
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise EventError(
            f"the event's {what} is not valid Unicode: a lone surrogate"
            f" {text[exc.start]!r} at position {exc.start}",
            hint="decode the text that fed it with errors='replace' (or fix its source)",
            orig=exc,
        ) from exc


def _json_text(data: Any) -> str:
    text = _json_text_of(data)
    _check_unicode("data", text)
    return text


def _json_text_of(data: Any) -> str:
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode()
        except UnicodeDecodeError as exc:
            raise EventError("event bytes are not UTF-8 JSON text", orig=exc) from exc
    if isinstance(data, str):
        try:
            json.loads(data)
        except ValueError as exc:
            raise EventError(
                f"event text is not JSON: {exc}",
                hint="pass a dict (or other JSON value), or JSON text",
                orig=exc,
            ) from exc
        return data
    try:
        return _encode(data)
    except (TypeError, ValueError) as exc:
        raise EventError(
            f"event data cannot be stored as JSON: {exc}",
            hint="convert dates, bytes and other objects to strings or numbers first",
            orig=exc,
        ) from exc


def _latest_sent(conn: sqlite3.Connection, type_: str, key: str) -> str | None:
    """What a save under ``key`` merges with when no event of the key waits: the
    message still waiting for its acknowledgement, else the state the receiver
    acknowledged last (``None`` when there is neither)."""
    sent = conn.execute(
        "SELECT processed_data FROM processed_sync_data WHERE type = ? AND key = ?"
        " ORDER BY _id DESC LIMIT 1",
        (type_, key),
    ).fetchone()
    if sent is not None:
        return gzip.decompress(sent[0]).decode()
    last = conn.execute(
        "SELECT data FROM outbox_merged WHERE type = ? AND key = ?", (type_, key)
    ).fetchone()
    return last[0] if last else None


def _merged(type_: str, merge: Merge, earlier: str, later: str) -> str:
    """``merge(earlier, later)`` as JSON text; an app's merge function that fails is
    an :class:`EventError` naming the type."""
    try:
        return _json_text(merge(json.loads(earlier), json.loads(later)))
    except EventError:
        raise
    except Exception as exc:
        raise EventError(
            f"the merge function of {type_!r} failed: {type(exc).__name__}: {exc}",
            orig=exc,
        ) from exc


def _lowest(
    conn: sqlite3.Connection, table: str, type_: str, measures: str
) -> tuple[int, int] | None:
    """Delete the oldest row of the lowest priority of ``type_`` in ``table`` and
    return its ``measures`` (events, bytes); two index lookups, no sort."""
    low = conn.execute(f"SELECT MIN(priority) FROM {table} WHERE type = ?", (type_,)).fetchone()[0]
    if low is None:
        return None
    row = conn.execute(
        f"SELECT _id, {measures} FROM {table} WHERE type = ? AND priority = ? ORDER BY _id LIMIT 1",
        (type_, low),
    ).fetchone()
    conn.execute(f"DELETE FROM {table} WHERE _id = ?", (row[0],))
    return int(row[1]), int(row[2])
