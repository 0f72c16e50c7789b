"""Small files sealed under a database key: the reference-file cache's index.

A sealed file is ``MAGIC``, a 12-byte nonce, then AES-256-GCM of the plaintext (the
tag authenticates it). The AEAD key is derived from the :class:`KeySource`: HKDF-SHA256
of a raw key, scrypt of a passphrase (once per object that holds it), with a label
naming the use, so it is never the database key itself.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import WrongDatabaseKeyError
from .database import KeySource, resolve

MAGIC = b"RPSEAL1\n"
_LABEL = b"replicator sealed file v1"


def derive(source: KeySource) -> bytes:
    """The 32-byte AEAD key for sealed files, from a raw key or a passphrase."""
    key = resolve(source)
    if isinstance(key, str):
        material = hashlib.scrypt(key.encode(), salt=_LABEL, n=1 << 14, r=8, p=1, dklen=32)
    else:
        material = bytes(key)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(material)


def seal(key: bytes, data: bytes) -> bytes:
    """``data`` sealed under ``key`` (from :func:`derive`)."""
    nonce = os.urandom(12)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, MAGIC)


def unseal(key: bytes, data: bytes, path: str) -> bytes:
    """The plaintext of the sealed file ``data`` (read from ``path``); a file not sealed
    under ``key`` raises ``WrongDatabaseKeyError`` naming ``path``."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 12 + 16:
        raise WrongDatabaseKeyError(path, hint="the file is not sealed: remove it, or give the key")
    nonce = data[len(MAGIC) : len(MAGIC) + 12]
    try:
        return AESGCM(key).decrypt(nonce, data[len(MAGIC) + 12 :], MAGIC)
    except InvalidTag:
        raise WrongDatabaseKeyError(path) from None
