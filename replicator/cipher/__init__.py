"""Encryption at rest: the local database, its WAL and journal, and every temporary
file replicator makes beside it, encrypted with SQLCipher (the ``sqlcipher`` extra).

::

    from replicator.cipher import EncryptedDatabase, KeyringKey

    db = EncryptedDatabase("field.db", key=KeyringKey("field-app", "db", create=True))
    Replicator(db, models, remote, blobs, key=snapshot_key)  # as with a plain database

A snapshot is encrypted under the snapshot key, not the database key, so devices
with different database keys (or none) restore each other's snapshots. See
``docs/guides/encryption.md`` for the threat model and the costs.
"""

from .database import (
    DatabaseKey,
    EncryptedDatabase,
    KeyringKey,
    KeySource,
    is_encrypted,
)
from .maintain import encrypt_in_place, rekey

__all__ = [
    "DatabaseKey",
    "EncryptedDatabase",
    "KeySource",
    "KeyringKey",
    "encrypt_in_place",
    "is_encrypted",
    "rekey",
]
