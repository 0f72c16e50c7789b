"""Files a snapshot passes through on this device, beside the database.

Invariants:

* every temporary file (the plaintext copy, the sealed file, a restore's
  download) lives beside the database, on the same disk, under a name that
  says which process made it; it is removed, with its journal files, when the
  step that made it ends, however it ends (:func:`temp_beside`);
* a file a killed process left behind is recognised by its name and removed
  by :func:`clean_leftovers`; a file of a live process (this one's included:
  another thread may be publishing) is never touched;
* an encrypted database's copy (SQLCipher) is never a file: it is made in memory
  and encrypted from there (:func:`plain_source`, ``cipher.copies``), so no
  plaintext byte of it reaches the disk, even when the process is killed;
* the plaintext copy holds only the synced tables and replicator's shared
  metadata: tables the app keeps for itself and device-local state never
  leave the device, and none of their bytes remain in the copy
  (:func:`write_plain_copy`).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from ..cipher.copies import plain_image
from ..cipher.database import is_cipher_connection
from ..local import OWN_TABLES, forget_installation


@contextmanager
def temp_beside(db_path: Path, tag: str) -> Iterator[Path]:
    """A temporary file beside the database, named after this process, removed (with its
    journal files) on the way out; a leftover of a process that died is recognised, and
    removed, by :func:`clean_leftovers`."""
    tmp = db_path.with_name(f".{db_path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    finally:
        for p in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            if p.exists():
                p.unlink()


_TEMP = re.compile(r"\.(?P<db>.+)\.(snapshot|sealed|restore)-(?P<pid>\d+)-[0-9a-f]{8}(-.*)?")


def clean_leftovers(db_path: Path) -> int:
    """Remove the temporary files (plaintext copies included) that a publish or restore
    killed part-way left beside the database; files of live processes are kept.
    Returns how many were removed."""
    removed = 0
    for p in db_path.parent.glob(f".{glob.escape(db_path.name)}.*"):
        found = _TEMP.fullmatch(p.name)
        if not found or found["db"] != db_path.name or not p.is_file():
            continue
        # a live process's file (this one's included: a thread may be publishing) stays
        if _alive(int(found["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def plain_source(conn: Any, tmp: Path, tables: Sequence[str]) -> Iterator[BinaryIO]:
    """The plaintext snapshot file to encrypt, open for reading: for an encrypted
    database an in-memory image (nothing on disk), else a copy written to ``tmp``
    (:func:`write_plain_copy`) and removed on the way out."""
    if is_cipher_connection(conn):
        with io.BytesIO(plain_image(conn, tables)) as image:
            yield image
        return
    write_plain_copy(conn, tmp, tables)
    try:
        with open(tmp, "rb") as src:
            yield src
    finally:
        tmp.unlink()  # the plaintext never outlives the encryption


def write_plain_copy(conn: sqlite3.Connection | Any, dest: Path, tables: Sequence[str]) -> None:
    """A consistent copy of the synced ``tables`` and replicator's metadata.

    Tables the app keeps for itself never leave the device: they are dropped
    from the copy (with ``secure_delete``, then a ``VACUUM``, so none of their
    bytes remain), and so is device-local state.
    """
    keep = {*tables, *OWN_TABLES}
    conn.execute("VACUUM INTO ?", (str(dest),))
    copy = sqlite3.connect(dest, isolation_level=None)
    try:
        copy.execute("PRAGMA secure_delete = ON")
        copy.execute("PRAGMA foreign_keys = OFF")
        copy.execute("BEGIN")
        dropped = False
        for kind, name in copy.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')"
            " AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            if kind == "view":
                copy.execute(f'DROP VIEW "{name}"')
            elif name not in keep:
                copy.execute(f'DROP TABLE "{name}"')
                dropped = True
        forget_installation(copy.execute)
        copy.execute("COMMIT")
        if dropped:  # secure_delete zeroed their pages; VACUUM also drops the free pages
            copy.execute("VACUUM")
        copy.execute("PRAGMA journal_mode = DELETE")
    finally:
        copy.close()
