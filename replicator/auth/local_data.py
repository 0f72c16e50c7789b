"""Removing a user's local data at sign-out: the database files the app names.

replicator does not guess which files hold a user's data: the app names them
(paths, or its peewee databases, which are closed first). Each database goes
with its SQLite companions (``-wal``, ``-shm``, ``-journal``), and those go
first: a database file left behind without them is still a consistent (older)
database, while a write-ahead log left behind without its database would be
replayed into the next database created under that name.

Every connection to those files must be closed first (stop the app's threads
that use the database). On Windows an open file cannot be removed; on POSIX it
can, but a connection still open would go on writing to the removed file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

from ..errors import ConfigurationError, LocalDatabaseError

log = logging.getLogger(__name__)

#: SQLite's companion files, removed before the database itself
COMPANIONS = ("-wal", "-shm", "-journal")
#: a path, or a peewee database (anything with ``.database`` and ``.close()``)
LocalData = Union[str, "os.PathLike[str]", Any]


def database_path(item: LocalData) -> Path | None:
    """The file behind ``item``: a path as given, or a peewee database's file (the
    database is closed first); ``None`` for an in-memory database."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    name = getattr(item, "database", None)
    close = getattr(item, "close", None)
    if not isinstance(name, str) or not callable(close):
        raise ConfigurationError(
            f"forget_local_data takes paths and peewee databases, not {type(item).__name__}"
        )
    if not item.is_closed():
        close()
    if not name or name == ":memory:" or name.startswith("file::memory:"):
        return None
    return Path(name)


def remove_local_data(items: Iterable[LocalData]) -> list[Path]:
    """Remove each named database with its ``-wal``, ``-shm`` and ``-journal`` files;
    return the files removed. Files already gone are fine, so calling it again after
    a failure finishes the job. Raises :class:`LocalDatabaseError` naming the files
    it could not remove (after trying every other one)."""
    removed: list[Path] = []
    failed: list[tuple[Path, OSError]] = []
    # every item is understood (and every database closed) before any file goes
    paths = [path for path in map(database_path, items) if path is not None]
    for path in paths:
        for file in [Path(f"{path}{suffix}") for suffix in COMPANIONS] + [path]:
            try:
                file.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                failed.append((file, exc))
                continue
            removed.append(file)
    if removed:
        log.info("removed %d local data file(s) at sign-out", len(removed))
    if failed:
        names = ", ".join(f"{file} ({exc.strerror or type(exc).__name__})" for file, exc in failed)
        raise LocalDatabaseError(
            f"could not remove the local data: {names}",
            retryable=False,
            hint="close every connection to the database, then call remove_local_data again",
            orig=failed[0][1],
        )
    return removed
