"""What an outbox file tells: per type status, dead letters, stored configurations.

Everything here only reads. :func:`read_status` reads a file on a read-only
connection (``replicator outbox status``): looking never creates or changes a
table in it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Collection
from pathlib import Path

import attrs

from ..errors import ConfigurationError
from ..sql import local_error
from .config import SyncConfiguration
from .schema import TABLES, user_tables


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
    the response of the refusal (status 0: the sink failed without an HTTP status,
    ``Retry.attempts`` times; the response is its error), and when it came."""

    msg_id: str
    type: str
    event_count: int
    status: int
    response: str
    failed_at: float


def statuses(
    conn: sqlite3.Connection, type_: str | None, configured: Collection[str]
) -> dict[str, TypeStatus]:
    """Per type (``type_`` alone, or every type ``configured`` or holding anything):
    see :class:`TypeStatus`; only reads, on ``conn``."""
    if type_ is not None:  # one type (every sync asks): no walk of the tables
        types = {type_}
    else:
        types = set(configured)
        for table in ("events", "processed_sync_data", "dead_letters", "outbox_state"):
            types.update(r[0] for r in conn.execute(f"SELECT DISTINCT type FROM {table}"))
    return {t: _type_status(conn, t, t in configured) for t in sorted(types)}


def configurations(conn: sqlite3.Connection) -> dict[str, SyncConfiguration]:
    """The configurations stored in the file; one that no longer reads is left out."""
    configs: dict[str, SyncConfiguration] = {}
    for type_, text in conn.execute("SELECT type, config FROM outbox_configs").fetchall():
        with contextlib.suppress(ConfigurationError, ValueError):
            configs[type_] = SyncConfiguration.from_dict(json.loads(text))
    return configs


def read_status(path: Path) -> dict[str, TypeStatus]:
    """The status of the outbox file at ``path``, read on a read-only connection.

    A file that does not hold an outbox's tables, or holds others, is a
    ``ConfigurationError`` naming it.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise local_error(f"could not open {path}", exc) from exc
    try:
        try:
            names = user_tables(conn)
        except sqlite3.DatabaseError as exc:
            raise local_error(f"could not read {path}", exc) from exc
        _check_tables(path, names)
        try:
            return statuses(conn, None, configurations(conn))
        except sqlite3.DatabaseError as exc:
            raise local_error(f"could not read {path}", exc) from exc
    finally:
        conn.close()


def _check_tables(path: Path, names: set[str]) -> None:
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


def _type_status(conn: sqlite3.Connection, type_: str, configured: bool) -> TypeStatus:
    events, size = pending_in(conn, type_)
    messages = conn.execute(
        "SELECT COUNT(*) FROM processed_sync_data WHERE type = ?", (type_,)
    ).fetchone()[0]
    dead = conn.execute("SELECT COUNT(*) FROM dead_letters WHERE type = ?", (type_,)).fetchone()[0]
    state = conn.execute(
        "SELECT dropped, last_success, last_error, next_attempt FROM outbox_state WHERE type = ?",
        (type_,),
    ).fetchone() or (0, None, None, None)
    return TypeStatus(type_, configured, events, size, messages, dead, *state)


def pending_in(conn: sqlite3.Connection, type_: str) -> tuple[int, int]:
    """The events of ``type_`` not yet delivered (waiting or in messages) and their
    bytes, counted from the tables."""
    n, b = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM events WHERE type = ?", (type_,)
    ).fetchone()
    bn, bb = conn.execute(
        "SELECT COALESCE(SUM(event_count), 0), COALESCE(SUM(size), 0)"
        " FROM processed_sync_data WHERE type = ?",
        (type_,),
    ).fetchone()
    return int(n + bn), int(b + bb)
