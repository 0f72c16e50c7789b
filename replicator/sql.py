"""What every SQLite user in the package shares: chunked ``IN`` queries, and the one
rule that tells what kind of trouble a SQLite error is.

The local database, an outbox file and the embedded remote all meet the same
five troubles, and each maps them to its own typed error from this one rule:
``busy`` (another connection held the lock longer than this one waits:
retrying helps), ``full`` (the disk or the file's size limit), ``damaged``
(not a database, or a corrupt one), ``unopened`` (SQLite could not open the
file at all: :func:`path_problem` tells whether the path itself is the
mistake, a missing folder or a folder named as the file) and ``other``.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

import peewee

from .errors import LocalDatabaseError, WrongDatabaseKeyError

P = ParamSpec("P")
R = TypeVar("R")


class _OnDatabase(Protocol):
    """An object working on one peewee database (a Replicator)."""

    @property
    def database(self) -> peewee.SqliteDatabase: ...


S = TypeVar("S", bound=_OnDatabase)

Trouble = Literal["busy", "full", "damaged", "unopened", "other"]

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
    if "unable to open" in text:
        return "unopened"
    return "other"


def path_problem(path: str | Path) -> str | None:
    """What is wrong with ``path`` as a database file's path, in words (a missing
    folder, a folder or a file where the other belongs, no file), or ``None`` when
    the path itself is fine. Asks only the file system, so it is cheap to call once
    SQLite failed to open a file."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if path.parent.exists() and not path.parent.is_dir():
        return f"{path.parent} is a file, not a folder"
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist"
    if not path.exists():
        return f"{path} does not exist"
    return None


_LOCAL_HINTS = {
    "busy": "another connection kept the database locked; try again (a longer"
    " SqliteDatabase(timeout=...) waits longer)",
    "full": "free disk space, then try again; nothing committed was lost",
    "damaged": "the file is damaged or not a SQLite database: check it with PRAGMA"
    " integrity_check, or restore it from a backup",
    "unopened": "give the database a file path in a folder that exists and that this user"
    " may write to",
    "other": "check the disk and the database file (PRAGMA integrity_check)",
}


def local_error(
    what: str, exc: BaseException, path: str | Path | None = None
) -> LocalDatabaseError:
    """The typed error for SQLite refusing work on a file of this device's (the app's
    database, an outbox): retryable only when it was busy. With the file's ``path``,
    a file SQLite could not open is explained by what is wrong with the path."""
    kind = trouble(exc)
    if kind == "damaged" and path is not None and _from_sqlcipher(exc):
        # SQLCipher cannot tell a wrong key from a damaged file: every page fails its MAC
        return WrongDatabaseKeyError(str(path), orig=exc)
    problem = path_problem(path) if kind == "unopened" and path is not None else None
    return LocalDatabaseError(
        f"{what}: {problem or exc}", retryable=kind == "busy", hint=_LOCAL_HINTS[kind], orig=exc
    )


def _from_sqlcipher(exc: BaseException) -> bool:
    """True when SQLCipher's driver raised ``exc`` (or the error peewee wrapped in it)."""
    origin = getattr(exc, "orig", None) or exc  # peewee keeps the driver's error as .orig
    return "not a database" in str(exc) and type(origin).__module__.startswith("sqlcipher3")


@contextmanager
def local_errors(what: str, path: str | Path | None = None) -> Iterator[None]:
    """Raise SQLite's errors in the block (``sqlite3``'s, or peewee's wrappers of them)
    as :func:`local_error`'s typed error."""
    try:
        yield
    except (sqlite3.DatabaseError, peewee.DatabaseError) as exc:
        raise local_error(what, exc, path) from exc


def on_local_database(
    failed: str,
) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Decorate a method of an object's work on its ``database``: SQLite's errors in it
    (peewee's own classes included) become :func:`local_error`'s typed error, whose
    message names the file and says what ``failed``. A caller never meets a bare
    peewee exception, and a path that cannot be a database is explained."""

    def wrap(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def call(self: S, /, *args: P.args, **kw: P.kwargs) -> R:
            path = str(self.database.database)
            with local_errors(f"the local database {path} {failed}", path):
                return method(self, *args, **kw)

        return call

    return wrap
