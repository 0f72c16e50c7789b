"""An encrypted local database: SQLCipher under peewee, its key from where the app says.

Invariants:

* every page of the database, its WAL and its journal is encrypted by SQLCipher
  (AES-256, an HMAC per page); SQLite's own temporary files stay in memory
  (``temp_store`` is MEMORY in the bundled build, and set again on each connection);
* the key is asked for each time a connection opens (:class:`KeySource`: a
  passphrase, a raw 32-byte key, a callable returning either, or the OS keyring) and
  is checked before the connection is handed out: a wrong key is a
  :class:`~replicator.errors.WrongDatabaseKeyError` naming the file, never SQLite's
  bare ``file is not a database``;
* a passphrase goes through SQLCipher's PBKDF2 (256,000 rounds of SHA-512, on every
  connection); a raw key skips it, so a key kept in a keyring should be raw.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

import attrs
import peewee

from ..errors import ConfigurationError, WrongDatabaseKeyError

try:  # the sqlcipher extra
    from playhouse.sqlcipher_ext import SqlCipherDatabase
    from sqlcipher3 import dbapi2 as sqlcipher
except ImportError:  # pragma: no cover - exercised without the extra only
    SqlCipherDatabase = None
    sqlcipher = None

#: a passphrase (text) or a raw key (32 bytes)
DatabaseKey = str | bytes


@attrs.frozen
class KeyringKey:
    """The database key kept in the OS keyring (the ``keyring`` extra) under
    ``service``/``username``, as a raw key in hex. With ``create`` a random raw key is
    made and stored the first time none is there (a new database)."""

    service: str
    username: str
    create: bool = False

    def __call__(self) -> bytes:
        try:
            import keyring
            from keyring.errors import KeyringError
        except ImportError as exc:
            raise ConfigurationError(
                "the OS keyring needs the keyring package",
                hint="pip install 'replicator[keyring]'",
            ) from exc
        try:
            stored = keyring.get_password(self.service, self.username)
            if stored is None and self.create:
                stored = os.urandom(32).hex()
                keyring.set_password(self.service, self.username, stored)
        except KeyringError as exc:
            raise ConfigurationError(
                f"the OS keyring refused the database key {self.service}/{self.username}: {exc}",
                hint="unlock the keyring, or give the key another way",
            ) from exc
        if stored is None:
            raise ConfigurationError(
                f"the OS keyring holds no database key {self.service}/{self.username}",
                hint="pass KeyringKey(..., create=True) for a new database",
            )
        try:
            return bytes.fromhex(stored)
        except ValueError:
            raise ConfigurationError(
                f"the keyring entry {self.service}/{self.username} is not a key in hex"
            ) from None


#: where the key comes from: the key itself, or a callable asked on each connection
KeySource = DatabaseKey | Callable[[], DatabaseKey]


def require_sqlcipher() -> Any:
    """The ``sqlcipher3`` driver, or a ConfigurationError saying how to install it."""
    if sqlcipher is None:
        raise ConfigurationError(
            "encryption at rest needs SQLCipher",
            hint="pip install 'replicator[sqlcipher]'",
        )
    return sqlcipher


def key_pragma(key: DatabaseKey) -> str:
    """The value of ``PRAGMA key`` / ``PRAGMA rekey`` for ``key``: a raw key as
    ``"x'<hex>'"`` (no key derivation), a passphrase as a quoted string."""
    if isinstance(key, (bytes, bytearray)):
        if len(key) != 32:
            raise ConfigurationError(
                f"a raw database key is 32 bytes, not {len(key)}",
                hint="use os.urandom(32), or a passphrase (text)",
            )
        return "\"x'" + bytes(key).hex() + "'\""
    if not isinstance(key, str) or not key:
        raise ConfigurationError(
            "a database key is a passphrase (non-empty text) or 32 raw bytes",
            hint="pass key='...' or key=os.urandom(32), or a callable returning one",
        )
    return "'" + key.replace("'", "''") + "'"


def resolve(source: KeySource) -> DatabaseKey:
    """The key ``source`` gives now (a callable is called)."""
    key = source() if callable(source) else source
    key_pragma(key)  # checks its form
    return key


def unlock(conn: Any, key: DatabaseKey, path: str) -> None:
    """Key a fresh SQLCipher connection and prove the key opens ``path``."""
    conn.execute("PRAGMA cipher_log_level = NONE")  # the typed error below says it all
    conn.execute(f"PRAGMA key = {key_pragma(key)}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher.DatabaseError as exc:
        if "not a database" in str(exc):
            raise WrongDatabaseKeyError(path, orig=exc) from None
        raise
    conn.execute("PRAGMA temp_store = MEMORY")


if SqlCipherDatabase is not None:

    class EncryptedDatabase(SqlCipherDatabase):  # type: ignore[misc]
        """A peewee ``SqliteDatabase`` whose file is encrypted with SQLCipher.

        ``key`` is a passphrase (``str``), a raw key (32 ``bytes``), a callable
        returning one (asked each time a connection opens: a prompt, a secrets
        service) or a :class:`KeyringKey`. A wrong key raises
        :class:`~replicator.errors.WrongDatabaseKeyError` when the connection opens.
        Everything else is peewee's ``SqliteDatabase`` (pragmas, ``timeout``...).

        >>> db = EncryptedDatabase("field.db", key=os.urandom(32))  # doctest: +SKIP
        """

        def __init__(self, database: str, *, key: KeySource, **kwargs: Any) -> None:
            super().__init__(database, **kwargs)
            self.key_source: KeySource = key

        def _connect(self) -> Any:
            params = dict(self.connect_params)
            params.pop("passphrase", None)
            conn = sqlcipher.connect(self.database, isolation_level=None, **params)
            try:
                unlock(conn, resolve(self.key_source), str(self.database))
                self._add_conn_hooks(conn)
            except BaseException:
                conn.close()
                raise
            return conn

        def rekey(self, passphrase: KeySource) -> bool:  # peewee's name for it
            """Re-encrypt the database under a new key (see :func:`replicator.cipher.rekey`)."""
            new = resolve(passphrase)
            if self.is_closed():
                self.connect()
            self.execute_sql(f"PRAGMA rekey = {key_pragma(new)}")
            self.key_source = passphrase
            return True

else:  # pragma: no cover - without the extra

    class EncryptedDatabase(peewee.SqliteDatabase):  # type: ignore[no-redef]
        """Needs the ``sqlcipher`` extra: ``pip install 'replicator[sqlcipher]'``."""

        def __init__(self, database: str, *, key: KeySource, **kwargs: Any) -> None:
            require_sqlcipher()


def attach_key(db: peewee.Database) -> str:
    """The ``KEY ...`` clause that attaches a file encrypted under ``db``'s key to one of
    ``db``'s connections (SQLCipher does not carry a raw key over to an attached file
    by itself); empty for a plain database."""
    if not is_encrypted(db):
        return ""
    if isinstance(db, EncryptedDatabase):
        return f" KEY {key_pragma(resolve(db.key_source))}"
    passphrase = db.connect_params.get("passphrase") or ""  # peewee's SqlCipherDatabase
    return f" KEY {key_pragma(passphrase)}" if passphrase else " KEY ''"


#: what either driver raises on a database's trouble, and on any trouble at all
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError,) + (
    (sqlcipher.DatabaseError,) if sqlcipher is not None else ()
)
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,) + (
    (sqlcipher.Error,) if sqlcipher is not None else ()
)


def connect_file(path: str, key: KeySource | None, **kw: Any) -> Any:
    """A DB-API connection to ``path``: sqlite3's, or with a ``key`` SQLCipher's, keyed
    and checked (a wrong key raises ``WrongDatabaseKeyError`` naming ``path``)."""
    if key is None:
        return sqlite3.connect(path, **kw)
    conn = require_sqlcipher().connect(path, **kw)
    try:
        unlock(conn, resolve(key), path)
    except BaseException:
        conn.close()
        raise
    return conn


def is_encrypted(db: peewee.Database) -> bool:
    """True when ``db`` is a SQLCipher database (this package's or peewee's own)."""
    return SqlCipherDatabase is not None and isinstance(db, SqlCipherDatabase)


def is_cipher_connection(conn: Any) -> bool:
    """True when ``conn`` is a connection of the SQLCipher driver."""
    return sqlcipher is not None and isinstance(conn, sqlcipher.Connection)
