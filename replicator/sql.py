"""What every SQLite user in the package shares: chunked ``IN`` queries, and the one
rule that tells what kind of trouble a SQLite error is.

The local database, an outbox file and the embedded remote all meet the same
four troubles, and each maps them to its own typed error from this one rule:
``busy`` (another connection held the lock longer than this one waits:
retrying helps), ``full`` (the disk or the file's size limit), ``damaged``
(not a database, or a corrupt one) and ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from .errors import LocalDatabaseError

Trouble = Literal["busy", "full", "damaged", "other"]

#: SQLite's default limit is 999 bound parameters per statement; leave room for others
CHUNK = 900


def select_in(
    execute: Callable[[str, tuple[Any, ...]], Any],
    sql: str,
    ids: Sequence[str],
    before: tuple[Any, ...] = (),
) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` for every id, in chunks that fit SQLite's parameter limit.

    ``sql`` holds one ``{}`` where the ``IN (...)`` placeholders go; ``before``
    are the parameters that precede them. ``execute`` is ``db.execute_sql`` or
    ``sqlite3.Connection.execute``.
    """
    out: list[tuple[Any, ...]] = []
    for i in range(0, len(ids), CHUNK):
        chunk = tuple(ids[i : i + CHUNK])
        marks = ",".join("?" * len(chunk))
        out += execute(sql.format(marks), (*before, *chunk)).fetchall()
    return out


def trouble(exc: BaseException) -> Trouble:
    """What kind of trouble SQLite's ``exc`` (from ``sqlite3`` or peewee's wrapper of it,
    which keeps the driver's message) is."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "busy"
    if "full" in text:
        return "full"
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return "damaged"
    return "other"


_LOCAL_HINTS = {
    "busy": "another connection kept the database locked; try again (a longer"
    " SqliteDatabase(timeout=...) waits longer)",
    "full": "free disk space, then try again; nothing committed was lost",
    "damaged": "the file is damaged or not a SQLite database: check it with PRAGMA"
    " integrity_check, or restore it from a backup",
    "other": "check the disk and the database file (PRAGMA integrity_check)",
}


def local_error(what: str, exc: BaseException) -> LocalDatabaseError:
    """The typed error for SQLite refusing work on a file of this device's (the app's
    database, an outbox): retryable only when it was busy."""
    kind = trouble(exc)
    return LocalDatabaseError(
        f"{what}: {exc}", retryable=kind == "busy", hint=_LOCAL_HINTS[kind], orig=exc
    )
