"""The database key for the command line: from a key file or an environment variable.

The CLI never takes a key as an argument (it would sit in the shell's history and in
``ps``). A config file's ``[database_key]`` section names a key ``file`` (64 hex
digits: a raw key, as ``replicator key generate`` writes one) or ``passphrase_env``
(the variable holding a passphrase); without a config file,
``REPLICATOR_DATABASE_KEY_FILE`` or ``REPLICATOR_DATABASE_PASSPHRASE`` say the same.
With neither, the database is plain SQLite.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import peewee

from ..errors import ConfigurationError
from .database import DatabaseKey, EncryptedDatabase, require_sqlcipher

#: the environment variables the CLI reads when no config file names the key
KEY_FILE_ENV = "REPLICATOR_DATABASE_KEY_FILE"
PASSPHRASE_ENV = "REPLICATOR_DATABASE_PASSPHRASE"


def read_key_file(path: Path) -> bytes:
    """The raw key in ``path``: 64 hex digits (surrounding blanks ignored)."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the database key file {path}: {exc}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigurationError(
            f"the database key file {path} does not hold 64 hex digits",
            hint="make one with: replicator key generate PATH",
        )
    return key


def cli_key(section: Mapping[str, str] | None, here: Path) -> DatabaseKey | None:
    """The key a config file's ``[database_key]`` ``section`` names (paths relative to
    ``here``), else the one the environment names, else ``None`` (a plain database)."""
    file = section.get("file") if section else os.environ.get(KEY_FILE_ENV)
    env = section.get("passphrase_env") if section else None
    if not section and os.environ.get(PASSPHRASE_ENV) is not None:
        env = PASSPHRASE_ENV
    if file:
        return read_key_file(here / file)
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigurationError(
                f"${env} is empty", hint="export the database passphrase, or unset it"
            )
        return value
    return None


def cli_database(
    path: Path, section: Mapping[str, str] | None = None, here: Path | None = None, **kw: Any
) -> peewee.SqliteDatabase:
    """The database at ``path``: encrypted when a key is named (:func:`cli_key`)."""
    key = cli_key(section, here or Path.cwd())
    if key is None:
        return peewee.SqliteDatabase(str(path), **kw)
    require_sqlcipher()
    return EncryptedDatabase(str(path), key=key, **kw)
