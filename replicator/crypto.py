"""Snapshot encryption: keys, and a streaming AEAD file format.

The key never leaves the device; blob storage only ever holds ciphertext.

Keys
    ``SnapshotKey(raw32)`` is a 32-byte key-encryption key (KEK). A
    ``Passphrase("...")`` becomes one through scrypt (memory-hard; n=2**15, r=8,
    p=1), with a random salt stored beside the snapshots so every device derives
    the same KEK.

Format, version 1 (all integers big-endian)::

    magic    8 bytes   b"RPLSNAP\\x00"
    version  u16       1
    hlen     u32       length of the header
    header   hlen      JSON: cipher, compression, chunk size, nonce prefix,
                       the wrapped data key, a key check value, kdf parameters,
                       and the snapshot's own metadata
    chunks   repeated  u32 length + AES-256-GCM ciphertext (tag included)

Every snapshot gets a fresh random 256-bit data key, wrapped (AES-GCM) by the
KEK. Chunk *i* is encrypted under the data key with nonce
``prefix(7) || i(4) || last(1)`` and the SHA-256 of magic+version+header as
associated data, so a chunk cannot be reordered, dropped, moved to another
snapshot or have its "last" flag forged, and the header cannot be altered. A
key check value (HMAC of a constant under the KEK) tells a wrong key from a
tampered file. Plaintext is compressed (zstd, level 3) before encryption, in
chunks of 1 MiB, so memory stays flat whatever the database size.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import attrs
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .errors import (
    ConfigurationError,
    TamperedSnapshotError,
    TruncatedSnapshotError,
    UnsupportedSnapshotError,
    WrongKeyError,
)

MAGIC = b"RPLSNAP\x00"
VERSION = 1
CHUNK = 1 << 20
_LEN = struct.Struct(">I")
_KCV_LABEL = b"replicator key check v1"
SCRYPT = {"n": 2**15, "r": 8, "p": 1}


@attrs.frozen(repr=False)
class SnapshotKey:
    """A 32-byte key-encryption key. Its repr never shows the key."""

    raw: bytes

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise ConfigurationError(
                "a snapshot key is 32 bytes",
                hint="generate one with SnapshotKey.generate() and keep it in the OS keystore",
            )

    def __repr__(self) -> str:
        return "SnapshotKey(<hidden>)"

    @classmethod
    def generate(cls) -> SnapshotKey:
        return cls(os.urandom(32))

    def check_value(self) -> str:
        return hmac.new(self.raw, _KCV_LABEL, hashlib.sha256).hexdigest()[:16]


@attrs.frozen(repr=False)
class Passphrase:
    """A passphrase, turned into a :class:`SnapshotKey` with scrypt and a stored salt."""

    text: str

    def __repr__(self) -> str:
        return "Passphrase(<hidden>)"

    def derive(self, kdf: Mapping[str, Any]) -> SnapshotKey:
        salt = base64.b64decode(kdf["salt"])
        raw = Scrypt(salt=salt, length=32, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(
            self.text.encode("utf-8")
        )
        return SnapshotKey(raw)


def new_kdf_params() -> dict[str, Any]:
    return {"alg": "scrypt", "salt": base64.b64encode(os.urandom(16)).decode(), **SCRYPT}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: SnapshotKey,
    metadata: Mapping[str, Any],
    *,
    kdf: Mapping[str, Any] | None = None,
    chunk_size: int = CHUNK,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Compress and encrypt ``src`` into ``dst`` in the format above."""
    data_key = AESGCM.generate_key(bit_length=256)
    wrap_nonce = os.urandom(12)
    prefix = os.urandom(7)
    header = {
        "cipher": "AES-256-GCM",
        "compression": "zstd",
        "chunk": chunk_size,
        "nonce_prefix": _b64(prefix),
        "wrap_nonce": _b64(wrap_nonce),
        "wrapped_key": _b64(AESGCM(key.raw).encrypt(wrap_nonce, data_key, _KCV_LABEL)),
        "kcv": key.check_value(),
        "kdf": dict(kdf) if kdf else None,
        "meta": dict(metadata),
    }
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    preamble = MAGIC + struct.pack(">H", VERSION) + _LEN.pack(len(header_bytes)) + header_bytes
    dst.write(preamble)
    aad = hashlib.sha256(preamble).digest()
    aead = AESGCM(data_key)
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    pending = bytearray()
    index = 0

    def emit(chunk: bytes, last: bool) -> None:
        nonlocal index
        sealed = aead.encrypt(_nonce(prefix, index, last), chunk, aad)
        dst.write(_LEN.pack(len(sealed)))
        dst.write(sealed)
        index += 1

    while True:
        block = src.read(chunk_size)
        if not block:
            break
        if on_bytes is not None:
            on_bytes(len(block))
        pending += compressor.compress(block)
        # a chunk is written only once more bytes follow it, so the last is known
        while len(pending) > chunk_size:
            emit(bytes(pending[:chunk_size]), last=False)
            del pending[:chunk_size]
    pending += compressor.flush()
    while len(pending) > chunk_size:
        emit(bytes(pending[:chunk_size]), last=False)
        del pending[:chunk_size]
    emit(bytes(pending), last=True)


def read_header(src: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """The header and the associated data its chunks are bound to."""
    start = src.read(14)
    if len(start) < 8 or start[:8] != MAGIC:
        raise UnsupportedSnapshotError("this object is not a replicator snapshot")
    if len(start) < 14:
        raise TruncatedSnapshotError("the snapshot ends inside its header")
    (version,) = struct.unpack(">H", start[8:10])
    if version != VERSION:
        raise UnsupportedSnapshotError(
            f"snapshot format version {version} is not supported (this replicator reads {VERSION})"
        )
    (hlen,) = _LEN.unpack(start[10:14])
    header_bytes = src.read(hlen)
    if len(header_bytes) < hlen:
        raise TruncatedSnapshotError("the snapshot ends inside its header")
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise TamperedSnapshotError("the snapshot header is not valid JSON") from exc
    return header, hashlib.sha256(start + header_bytes).digest()


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: SnapshotKey | Passphrase,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Verify and decrypt ``src`` into ``dst``; return the header. Raises a SnapshotError."""
    header, aad = read_header(src)
    if isinstance(key, Passphrase):
        if not header.get("kdf"):
            raise WrongKeyError("this snapshot was made with a raw key, not a passphrase")
        key = key.derive(header["kdf"])
        what = "passphrase"
    else:
        what = "key"
    try:
        if not hmac.compare_digest(str(header["kcv"]), key.check_value()):
            raise WrongKeyError(f"the {what} does not open this snapshot")
        data_key = AESGCM(key.raw).decrypt(
            base64.b64decode(header["wrap_nonce"]),
            base64.b64decode(header["wrapped_key"]),
            _KCV_LABEL,
        )
        prefix = base64.b64decode(header["nonce_prefix"])
    except (KeyError, ValueError, InvalidTag) as exc:
        raise TamperedSnapshotError("the snapshot header was altered") from exc
    aead = AESGCM(data_key)
    decompressor = zstandard.ZstdDecompressor().decompressobj()

    def read_record() -> bytes | None:
        raw = src.read(4)
        if not raw:
            return None
        if len(raw) < 4:
            raise TruncatedSnapshotError("the snapshot ends inside a chunk")
        (length,) = _LEN.unpack(raw)
        body = src.read(length)
        if len(body) < length:
            raise TruncatedSnapshotError("the snapshot ends inside a chunk")
        return body

    index = 0
    current = read_record()
    if current is None:
        raise TruncatedSnapshotError("the snapshot has no data")
    while current is not None:
        following = read_record()
        last = following is None
        try:
            chunk = aead.decrypt(_nonce(prefix, index, last), current, aad)
        except InvalidTag:
            if last:
                try:
                    aead.decrypt(_nonce(prefix, index, False), current, aad)
                except InvalidTag:
                    pass
                else:
                    raise TruncatedSnapshotError(
                        f"the snapshot stops after chunk {index}; its last chunk is missing"
                    ) from None
            raise TamperedSnapshotError(
                f"chunk {index} of the snapshot fails authentication"
            ) from None
        try:
            out = decompressor.decompress(chunk)
        except zstandard.ZstdError as exc:  # authenticated, so only a writer bug gets here
            raise TamperedSnapshotError(f"chunk {index} does not decompress") from exc
        dst.write(out)
        if on_bytes is not None:
            on_bytes(len(current) + 4)
        index += 1
        current = following
    return header
