"""Messages of a type: built from waiting events, read in line, acknowledged.

Invariants (the transactions around these are the ``delivery`` module's):

* a batched type's message is gzipped JSON (``msg_id``, ``type``, ``events``)
  built around each event's stored text; a single event goes as its own JSON text;
* a message is built only when none of the type that never failed is ready to be
  sent (besides the one just acknowledged and those this delivery set aside), so
  a message once built is sent again under its ``msg_id`` until acknowledged,
  never rebuilt, and one that keeps failing does not stop new ones being built;
* the line goes: messages that failed fewer times first (one that keeps failing
  goes after the others), then by priority (highest first), then oldest first;
  but a message never overtakes an earlier one of its key still in line (the
  receiver would get an older state last), whether that one failed or not;
* a message is claimed (``claimed_until``) by the delivery that takes it, in the
  transaction that takes it: another process's automatic delivery leaves it
  alone until the claim runs out, and builds the next message instead, so
  processes on one file send different messages rather than the same one twice.
  An explicit sync takes claimed messages too, last (a claim left by a process
  that died must not hold back a sync that is to send everything);
* a message is named by its ``msg_id`` once read: an acknowledgement deletes that
  ``msg_id`` and counts only if it removed the row (another process may have
  acknowledged it first).
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import attrs

from .config import SyncConfiguration
from .store import Removed, note_removed

#: a message (``p``) that no earlier message of its key waits before
_IN_TURN = (
    "NOT EXISTS (SELECT 1 FROM processed_sync_data AS e"
    " WHERE e.type = p.type AND e.key = p.key AND e._id < p._id)"
)
#: a message (``p``) that a process is sending (its claim runs until after ``:now``)
_CLAIMED = "(p.claimed_until IS NOT NULL AND p.claimed_until > :now)"


@attrs.frozen
class Message:
    """A message ready to send, as read from ``processed_sync_data`` (``body``
    un-gzipped for a single event)."""

    msg_id: str
    type: str
    body: bytes
    gzipped: bool
    event_count: int
    key: str | None
    size: int
    priority: int


@attrs.frozen
class Built:
    """A message built from waiting events (``rows``), not yet written."""

    msg_id: str
    rows: list[Any]
    data: bytes
    key: str | None
    size: int


def build(
    conn: sqlite3.Connection,
    config: SyncConfiguration,
    upto: int,
    *,
    done: str | None,
    skipped: Collection[str],
    batch_events: int,
    batch_bytes: int,
    now: float,
) -> Built | None:
    """The next message of ``config.type`` from events saved up to ``_id`` ``upto``
    (up to ``batch_events`` and ``batch_bytes`` of them for a batched type, one
    otherwise), or ``None`` when a message that never failed is ready to go besides
    ``done`` and ``skipped`` (unclaimed at ``now``: send that first) or nothing
    waits."""
    ready = conn.execute(
        "SELECT msg_id FROM processed_sync_data AS p WHERE type = :type AND failures = 0"
        f" AND {_IN_TURN} AND NOT {_CLAIMED}",
        {"type": config.type, "now": now},
    ).fetchall()
    if any(r[0] != done and r[0] not in skipped for r in ready):
        return None
    limit = batch_events if config.should_batch else 1
    rows = conn.execute(
        "SELECT _id, key, data, timestamp, priority FROM events"
        " WHERE type = ? AND _id <= ? ORDER BY priority DESC, _id LIMIT ?",
        (config.type, upto, limit),
    ).fetchall()
    if not rows:
        return None
    taken: list[Any] = []
    size = 0
    for row in rows:
        if taken and size + len(row[2]) > batch_bytes:
            break
        taken.append(row)
        size += len(row[2])
    msg_id = uuid.uuid4().hex
    if config.should_batch:
        body, key = batch_body(msg_id, config.type, taken), None
    else:
        body, key = taken[0][2].encode(), taken[0][1]
    return Built(msg_id, taken, gzip.compress(body, compresslevel=6), key, size)


def insert(conn: sqlite3.Connection, type_: str, built: Built) -> None:
    """Write ``built`` as a message ready to send, and delete its events."""
    conn.execute(
        "INSERT INTO processed_sync_data"
        " (msg_id, type, processed_data, event_count, priority, key, size)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            built.msg_id,
            type_,
            built.data,
            len(built.rows),
            max(r[4] for r in built.rows),
            built.key,
            built.size,
        ),
    )
    conn.execute(
        "DELETE FROM events WHERE _id IN (SELECT value FROM json_each(?))",
        (json.dumps([r[0] for r in built.rows]),),
    )


def unchanged(conn: sqlite3.Connection, rows: Sequence[Any]) -> bool:
    """Whether the events read for a message still wait, as they were read (a save
    under the same key rewrites ``data`` and ``timestamp``; another process may
    have taken them, and a new event been given one of their ``_id``)."""
    now = conn.execute(
        "SELECT _id, key, timestamp, length(data) FROM events"
        " WHERE _id IN (SELECT value FROM json_each(?))",
        (json.dumps([r[0] for r in rows]),),
    ).fetchall()
    return sorted(now) == sorted((r[0], r[1], r[3], len(r[2])) for r in rows)


def take_next(
    conn: sqlite3.Connection,
    type_: str,
    batched: bool,
    skipped: Collection[str],
    *,
    now: float,
    until: float,
    claimed_too: bool,
) -> Message | None:
    """Take the first message of ``type_`` in line, in the caller's write
    transaction, leaving out those ``skipped``, those behind an earlier message of
    their key and, unless ``claimed_too``, those another delivery claimed (taken
    last otherwise); claim it until ``until``."""
    claimed = "" if claimed_too else f" AND NOT {_CLAIMED}"
    row = conn.execute(
        "SELECT msg_id, processed_data, event_count, key, size, priority"
        " FROM processed_sync_data AS p WHERE type = :type"
        f" AND msg_id NOT IN (SELECT value FROM json_each(:skipped)) AND {_IN_TURN}{claimed}"
        f" ORDER BY {_CLAIMED}, failures, priority DESC, _id LIMIT 1",
        {"type": type_, "skipped": json.dumps(sorted(skipped)), "now": now},
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE processed_sync_data SET claimed_until = ? WHERE msg_id = ?", (until, row[0])
    )
    data = row[1] if batched else gzip.decompress(row[1])
    return Message(row[0], type_, data, batched, row[2], row[3], row[4], row[5])


def acknowledge(conn: sqlite3.Connection, message: Message, *, merged: bool) -> Removed | None:
    """Forget ``message``, acknowledged by the receiver; with ``merged`` (its type
    has a merge function) keep its body as what the next save under its key merges
    with. Returns the new removed totals, or ``None`` when another process had
    already acknowledged (or dead-lettered) it: nothing is counted twice, and an
    older state never replaces a newer one."""
    gone = conn.execute(
        "DELETE FROM processed_sync_data WHERE msg_id = ?", (message.msg_id,)
    ).rowcount
    if not gone:
        return None
    if message.key is not None and merged:
        conn.execute(
            "INSERT OR REPLACE INTO outbox_merged (type, key, data) VALUES (?, ?, ?)",
            (message.type, message.key, message.body.decode()),
        )
    return note_removed(conn, message.type, message.event_count, message.size)


def batch_body(msg_id: str, type_: str, rows: Sequence[Any]) -> bytes:
    """The JSON of one batch, built around each event's stored text (not re-parsed)."""
    events = ",".join(
        f'{{"key":{json.dumps(key)},"timestamp":{ts!r},"priority":{prio},"data":{data}}}'
        for _id, key, data, ts, prio in rows
    )
    head = json.dumps({"msg_id": msg_id, "type": type_})[:-1]
    return f'{head},"events":[{events}]}}'.encode()
