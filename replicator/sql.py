"""A small SQL helper shared by the local tables and the embedded store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

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
