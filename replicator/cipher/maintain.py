"""Changing what a database file is encrypted with: a new key, or a first key.

Invariants:

* :func:`rekey` re-encrypts every page under the new key in one SQLCipher
  transaction (``PRAGMA rekey``): killed part-way, the database is whole under
  the old key;
* :func:`encrypt_in_place` writes an encrypted copy beside the plain file, makes it
  durable, then renames it over the plain one (atomic): killed at any point, the
  path holds either the whole plain database or the whole encrypted one, and the
  plain bytes never get a second name; the plain file, held open across the
  rename, is then overwritten with zeros (on a flash disk or a copy-on-write file
  system old blocks may survive that, and so they do when the process is killed
  between the rename and the zeroing: see the threat model in the encryption
  guide); an encrypted copy a killed run left is removed by the next run;
* neither runs while another connection has the file open: the app closes its
  database first (a Replicator over it included).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import uuid
from pathlib import Path
from typing import BinaryIO

import peewee

from ..errors import ConfigurationError, LocalDatabaseError, WrongDatabaseKeyError
from ..sql import local_error
from .database import KeySource, is_encrypted, key_pragma, require_sqlcipher, resolve, unlock


def rekey(db: peewee.SqliteDatabase, new_key: KeySource) -> None:
    """Re-encrypt the encrypted database ``db`` under ``new_key`` (its old key is the
    one it was opened with); later connections of ``db`` use ``new_key``."""
    if not is_encrypted(db):
        raise ConfigurationError(
            f"{db.database} is not an encrypted database",
            hint="encrypt a plain database with replicator.cipher.encrypt_in_place",
        )
    key = resolve(new_key)
    try:
        if db.is_closed():
            db.connect()
        db.execute_sql(f"PRAGMA rekey = {key_pragma(key)}")
    except peewee.DatabaseError as exc:
        raise local_error(f"{db.database} could not be given a new key", exc, db.database) from exc
    if hasattr(db, "key_source"):
        db.key_source = new_key
    else:  # peewee's own SqlCipherDatabase
        db.connect_params["passphrase"] = key if isinstance(key, str) else f"x'{key.hex()}'"


def encrypt_in_place(path: str | os.PathLike[str], key: KeySource) -> None:
    """Encrypt the plain SQLite database at ``path`` under ``key``, in place.

    Every table, index, trigger, view and ``user_version`` is kept, replicator's
    tables included, so a Replicator opened on the encrypted file with the same
    models carries on where it was. A file that is already encrypted (or not a
    database) raises ``WrongDatabaseKeyError``/``LocalDatabaseError`` and is left as
    it was.
    """
    driver = require_sqlcipher()
    source = Path(path)
    if not source.is_file():
        raise ConfigurationError(f"{source} is not a database file")
    new = resolve(key)
    _clean_leftovers(source)
    tmp = source.with_name(f".{source.name}.encrypting-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    conn = driver.connect(str(source), isolation_level=None)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn.execute(f"ATTACH DATABASE ? AS encrypted KEY {key_pragma(new)}", (str(tmp),))
            # the copy is a temporary file until the rename: no journal of its own, and
            # only it is written (one file: no super-journal beside the database)
            conn.execute("PRAGMA encrypted.journal_mode = OFF")
            conn.execute("BEGIN")  # one read of the plain database: a consistent copy
            conn.execute("SELECT sqlcipher_export('encrypted')")
            (version,) = conn.execute("PRAGMA main.user_version").fetchone()
            conn.execute(f"PRAGMA encrypted.user_version = {int(version)}")
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE encrypted")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except driver.DatabaseError as exc:
            _remove(tmp)
            if "not a database" in str(exc):
                raise WrongDatabaseKeyError(
                    str(source),
                    hint="the file is already encrypted, or not a SQLite database",
                ) from None
            raise local_error(f"{source} could not be encrypted", exc, source) from exc
    finally:
        conn.close()
    _swap(source, tmp, new)


def _swap(source: Path, tmp: Path, key: object) -> None:
    """Prove ``tmp`` opens under ``key``, make it durable, rename it over ``source`` and
    overwrite the plain file's old bytes with zeros."""
    check = require_sqlcipher().connect(str(tmp), isolation_level=None)
    try:
        unlock(check, key, str(tmp))  # type: ignore[arg-type]
        (ok,) = check.execute("PRAGMA quick_check").fetchone()
    finally:
        check.close()
    if ok != "ok":
        _remove(tmp)
        raise LocalDatabaseError(f"the encrypted copy of {source} fails its check", retryable=False)
    _fsync(tmp)
    # the plain file stays open (no second name on the disk) to be zeroed once replaced
    with open(source, "r+b") as plain:
        os.replace(tmp, source)
        _fsync(source.parent)
        for suffix in ("-wal", "-shm", "-journal"):
            _remove(Path(f"{source}{suffix}"))
        _zero(plain)


def _zero(f: BinaryIO) -> None:
    size = os.fstat(f.fileno()).st_size
    block = b"\0" * (1 << 20)
    for start in range(0, size, len(block)):
        f.write(block[: min(len(block), size - start)])
    f.flush()
    os.fsync(f.fileno())


def _clean_leftovers(source: Path) -> None:
    """Remove the encrypted copies a killed ``encrypt_in_place`` left (ciphertext under
    the new key; a live process's copy is kept)."""
    for p in source.parent.glob(f".{glob.escape(source.name)}.encrypting-*"):
        found = re.fullmatch(r".*\.encrypting-(\d+)-[0-9a-f]{8}(-.*)?", p.name)
        if found and not _alive(int(found[1])):
            _remove(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
