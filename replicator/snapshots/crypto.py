"""Snapshot encryption: keys, and a streaming AEAD file format.

The key never leaves the device; blob storage only ever holds ciphertext.

Keys
    ``SnapshotKey(raw32)`` is a 32-byte key-encryption key (KEK). A
    ``Passphrase("...")`` becomes one through scrypt (memory-hard; n=2**15, r=8,
    p=1), with a random salt stored beside the snapshots so every device derives
    the same KEK. A ``KeyRing`` holds several generations of a KEK: the newest
    seals what is published, and a snapshot opens with the generation whose key
    check value its header carries (a scope's keys, rotated when a member is
    removed: ``replicator.scopes.keys``).

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
import functools
import hashlib
import hmac
import itertools
import json
import os
import pathlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO, Protocol, runtime_checkable

import attrs
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import (
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
#: scrypt parameters a snapshot may ask for: never weaker than the floor, and
#: never more memory (128 * n * r bytes) than the cap, checked before deriving
SCRYPT_FLOOR = {"n": 2**15, "r": 8, "p": 1}
SCRYPT_MAX_MEMORY = 256 * 2**20
SCRYPT_MAX_P = 16
#: largest header and chunk a reader accepts (a crafted length never allocates more)
MAX_HEADER = 64 * 1024
MAX_CHUNK = 16 * 2**20


def check_kdf(kdf: Any) -> dict[str, Any]:
    """Validate passphrase parameters (from kdf.json or a header); return them.

    Raises ``TamperedSnapshotError`` for anything malformed, weaker than
    :data:`SCRYPT_FLOOR` (a downgrade makes guessing the passphrase cheaper) or
    asking for more than :data:`SCRYPT_MAX_MEMORY`, before any memory is used.
    """
    if not isinstance(kdf, Mapping):
        raise TamperedSnapshotError("the passphrase parameters are not a map")
    if kdf.get("alg", "scrypt") != "scrypt":
        raise TamperedSnapshotError(f"unknown key derivation {kdf.get('alg')!r}")
    values = {}
    for name in ("n", "r", "p"):
        value = kdf.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TamperedSnapshotError(f"the passphrase parameter {name} is not an integer")
        values[name] = value
    n, r, p = values["n"], values["r"], values["p"]
    if n < SCRYPT_FLOOR["n"] or r < SCRYPT_FLOOR["r"] or p < SCRYPT_FLOOR["p"]:
        raise TamperedSnapshotError(
            f"the passphrase parameters (n={n}, r={r}, p={p}) are below the floor"
            f" (n>={SCRYPT_FLOOR['n']}, r>={SCRYPT_FLOOR['r']}, p>={SCRYPT_FLOOR['p']}):"
            " refusing a downgrade",
            hint="someone weakened snapshots/kdf.json; restore it from a device or start anew",
        )
    if n & (n - 1) or 128 * n * r > SCRYPT_MAX_MEMORY or p > SCRYPT_MAX_P:
        raise TamperedSnapshotError(
            f"the passphrase parameters (n={n}, r={r}, p={p}) are not a power of two or ask"
            f" for more than {SCRYPT_MAX_MEMORY >> 20} MiB"
        )
    salt = kdf.get("salt")
    try:
        raw_salt = base64.b64decode(salt, validate=True) if isinstance(salt, str) else b""
    except ValueError:
        raw_salt = b""
    if not 16 <= len(raw_salt) <= 64:
        raise TamperedSnapshotError("the passphrase salt is missing or malformed")
    out = {"alg": "scrypt", "salt": salt, "n": n, "r": r, "p": p}
    if "kcv" in kdf:
        if not isinstance(kdf["kcv"], str):
            raise TamperedSnapshotError("the passphrase key check value is malformed")
        out["kcv"] = kdf["kcv"]
    return out


@functools.lru_cache(maxsize=8)
def _scrypt(text: str, salt: str, n: int, r: int, p: int) -> bytes:
    kdf = Scrypt(salt=base64.b64decode(salt), length=32, n=n, r=r, p=p)
    return kdf.derive(text.encode("utf-8"))


def key_from_file(data: bytes, path: object = "the key file") -> bytes:
    """The 32-byte key in a key file: exactly 32 raw bytes, or 64 hex digits.

    Raw keys are taken byte for byte (a raw key may begin or end with a byte that
    looks like whitespace); hex keys may have surrounding whitespace or a newline.
    """
    if len(data) == 32:
        return data
    text = data.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ConfigurationError(
        f"{path} holds {len(data)} bytes that are neither a 32-byte raw key nor 64 hex digits",
        hint=_MAKE_A_KEY,
    )


_MAKE_A_KEY = "make a key file with: replicator key generate FILE"


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

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SnapshotKey:
        """The key in a key file, as ``replicator key generate FILE`` writes it (64 hex
        digits; surrounding whitespace allowed) or exactly 32 raw bytes (taken byte for
        byte). A missing or unreadable file, or one that holds no key, is a
        ``ConfigurationError`` naming it."""
        file = pathlib.Path(path)
        if file.is_dir():
            raise ConfigurationError(f"{path} is a directory, not a key file", hint=_MAKE_A_KEY)
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise ConfigurationError(f"no key file at {path}", hint=_MAKE_A_KEY) from None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the key file {path}: {exc.strerror or exc}",
                hint="check the file's permissions; " + _MAKE_A_KEY,
            ) from exc
        return cls(key_from_file(data, path))

    def check_value(self) -> str:
        return hmac.new(self.raw, _KCV_LABEL, hashlib.sha256).hexdigest()[:16]


def _generations(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


def _ring_keys(value: Iterable[SnapshotKey]) -> tuple[SnapshotKey, ...]:
    return tuple(value)


@attrs.frozen(repr=False)
class KeyRing:
    """Generations of a :class:`SnapshotKey`, oldest first: the newest seals what is
    published; a snapshot or manifest opens with the generation whose key check value
    it carries (the format is unchanged: a header always names its key's check value).

    ``generations`` numbers the keys (default 1, 2, ...; strictly increasing). A
    snapshot sealed under a generation the ring lacks is ``WrongKeyError``: the device
    must read the newer keys (a scope member syncs them; a member removed from the
    scope never gets the keys made after the removal). Its repr never shows a key.
    """

    keys: tuple[SnapshotKey, ...] = attrs.field(converter=_ring_keys)
    generations: tuple[int, ...] = attrs.field(default=(), converter=_generations)
    #: each generation by its key check value (public: every header carries it)
    _by_check: dict[str, SnapshotKey] = attrs.field(init=False, factory=dict, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.keys or not all(isinstance(k, SnapshotKey) for k in self.keys):
            raise ConfigurationError(
                "a key ring holds one SnapshotKey or more",
                hint="KeyRing([SnapshotKey(...), ...]), oldest generation first",
            )
        if not self.generations:
            object.__setattr__(self, "generations", tuple(range(1, len(self.keys) + 1)))
        numbers = self.generations
        if len(numbers) != len(self.keys) or any(a >= b for a, b in itertools.pairwise(numbers)):
            raise ConfigurationError(
                "a key ring's generations are one strictly increasing number per key",
                hint="give the keys oldest first, with their generations in the same order",
            )
        self._by_check.update((key.check_value(), key) for key in self.keys)

    def __repr__(self) -> str:
        return f"KeyRing(<generations {', '.join(map(str, self.generations))} hidden>)"

    @property
    def newest(self) -> SnapshotKey:
        """The key that seals what is published."""
        return self.keys[-1]

    def find(self, kcv: str) -> SnapshotKey | None:
        """The generation whose key check value is ``kcv``, or None."""
        return self._by_check.get(kcv)

    def ring(self) -> KeyRing:
        """This ring (a :class:`KeySource` that never changes)."""
        return self


@runtime_checkable
class KeySource(Protocol):
    """A key ring that may grow: read again (``ring()``) each time a snapshot is
    published or restored, so a rotation is picked up without reopening anything
    (:class:`~replicator.scopes.keys.ScopeKeyRing` reads a scope's keys from
    Firestore). ``ring()`` raises a ``ReplicatorError`` when it cannot be read."""

    def ring(self) -> KeyRing: ...


#: a key resolved for one publish or restore: one key, or the generations of a ring
Kek = SnapshotKey | KeyRing


def publishing_key(kek: Kek) -> SnapshotKey:
    """The key that seals a snapshot and its manifest: a ring's newest generation."""
    return kek.newest if isinstance(kek, KeyRing) else kek


def opening_key(kek: Kek, kcv: str, mismatch: str) -> SnapshotKey:
    """The key whose check value is ``kcv``: ``kek`` itself (else ``WrongKeyError``
    saying ``mismatch``), or the ring's generation that has it (else ``WrongKeyError``
    saying the device lacks that generation)."""
    if isinstance(kek, SnapshotKey):
        if not hmac.compare_digest(kcv, kek.check_value()):
            raise WrongKeyError(mismatch)
        return kek
    found = kek.find(kcv)
    if found is None:
        held = ", ".join(map(str, kek.generations))
        raise WrongKeyError(
            f"this was sealed under a key generation this device does not hold (key check"
            f" value {kcv[:16]!r}; the device holds generations {held})",
            hint="sync to read the scope's newest keys; a member removed from the scope"
            " never gets the keys made after the removal",
        )
    return found


@attrs.frozen(repr=False)
class Passphrase:
    """A passphrase, turned into a :class:`SnapshotKey` with scrypt and a stored salt."""

    text: str

    def __repr__(self) -> str:
        return "Passphrase(<hidden>)"

    def derive(self, kdf: Mapping[str, Any]) -> SnapshotKey:
        """The KEK for these (checked) parameters; derivations are cached per process,
        so a sync that checks the manifest and publishes derives once."""
        p = check_kdf(kdf)
        return SnapshotKey(_scrypt(self.text, p["salt"], p["n"], p["r"], p["p"]))


def new_kdf_params(passphrase: Passphrase | None = None) -> dict[str, Any]:
    """Fresh scrypt parameters; with the passphrase, a key check value of the result."""
    params = {"alg": "scrypt", "salt": base64.b64encode(os.urandom(16)).decode(), **SCRYPT}
    if passphrase is not None:
        params["kcv"] = passphrase.derive(params).check_value()
    return params


def mac_key(kek: SnapshotKey) -> bytes:
    """The key that authenticates the manifest, derived from the KEK."""
    return hmac.new(kek.raw, b"replicator manifest mac v1", hashlib.sha256).digest()


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
    if hlen > MAX_HEADER:
        raise TamperedSnapshotError(
            f"the snapshot header claims {hlen} bytes (at most {MAX_HEADER})"
        )
    header_bytes = src.read(hlen)
    if len(header_bytes) < hlen:
        raise TruncatedSnapshotError("the snapshot ends inside its header")
    try:
        header = json.loads(header_bytes)
    except (ValueError, RecursionError) as exc:
        raise TamperedSnapshotError("the snapshot header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise TamperedSnapshotError("the snapshot header is not a map")
    return header, hashlib.sha256(start + header_bytes).digest()


def require(fields: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    """``fields[name]`` if it is a ``kind`` (a bool is never an int), else
    ``TamperedSnapshotError`` naming ``where`` it was looked for."""
    value = fields.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TamperedSnapshotError(f"{where}'s {name} is missing or malformed")
    return value


def _field(header: Mapping[str, Any], name: str, kind: type) -> Any:
    return require(header, name, kind, "the snapshot header")


def _b64field(header: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    try:
        value = base64.b64decode(_field(header, name, str), validate=True)
    except ValueError:
        raise TamperedSnapshotError(f"the snapshot header's {name} is not base64") from None
    if size is not None and len(value) != size:
        raise TamperedSnapshotError(f"the snapshot header's {name} has the wrong length")
    return value


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: Kek | Passphrase,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Verify and decrypt ``src`` into ``dst``; return the header. Raises a SnapshotError.

    Each chunk is authenticated before its plaintext is written, and the last
    one must carry the "last" flag, so a stream cut at a chunk boundary is
    told apart from a whole one.
    """
    header, aad = read_header(src)
    sealing = _open_header(header, key)
    aead = AESGCM(sealing.data_key)
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    limit = sealing.chunk_size + 64  # a sealed chunk: at most a chunk of data plus the tag
    for index, (record, last) in enumerate(_records(src, limit)):
        chunk = _open_chunk(aead, sealing.nonce_prefix, index, record, last, aad)
        try:
            out = decompressor.decompress(chunk)
        except zstandard.ZstdError as exc:  # authenticated, so only a writer bug gets here
            raise TamperedSnapshotError(f"chunk {index} does not decompress") from exc
        dst.write(out)
        if on_bytes is not None:
            on_bytes(len(record) + 4)
    return header


@attrs.frozen(repr=False)
class _Sealing:
    """What a checked header says about the chunks that follow it."""

    chunk_size: int
    nonce_prefix: bytes
    data_key: bytes


def _open_header(header: Mapping[str, Any], key: Kek | Passphrase) -> _Sealing:
    """Check the header's fields, then unwrap its data key with ``key`` (a ring's
    generation whose check value the header names): a wrong key is ``WrongKeyError``
    (by the key check value), an altered header ``TamperedSnapshotError``."""
    if header.get("cipher") != "AES-256-GCM" or header.get("compression") != "zstd":
        raise TamperedSnapshotError("the snapshot header names an unknown cipher or compression")
    chunk_size = _field(header, "chunk", int)
    if not 0 < chunk_size <= MAX_CHUNK:
        raise TamperedSnapshotError(f"the snapshot header claims chunks of {chunk_size} bytes")
    prefix = _b64field(header, "nonce_prefix", 7)
    wrap_nonce = _b64field(header, "wrap_nonce", 12)
    wrapped = _b64field(header, "wrapped_key", 48)
    kcv = _field(header, "kcv", str)
    if header.get("kdf") is not None:
        check_kdf(header["kdf"])
    if isinstance(key, Passphrase):
        if not header.get("kdf"):
            raise WrongKeyError("this snapshot was made with a raw key, not a passphrase")
        kek: Kek = key.derive(header["kdf"])
        what = "passphrase"
    else:
        kek, what = key, "key"
    opener = opening_key(kek, kcv, f"the {what} does not open this snapshot")
    try:
        data_key = AESGCM(opener.raw).decrypt(wrap_nonce, wrapped, _KCV_LABEL)
    except InvalidTag as exc:
        raise TamperedSnapshotError("the snapshot header was altered") from exc
    return _Sealing(chunk_size, prefix, data_key)


def _records(src: BinaryIO, limit: int) -> Iterator[tuple[bytes, bool]]:
    """The sealed chunks of ``src``, each with whether it is the last: a chunk is
    given only once the next one has been read, so the last is known."""
    current = _read_record(src, limit)
    if current is None:
        raise TruncatedSnapshotError("the snapshot has no data")
    while current is not None:
        following = _read_record(src, limit)
        yield current, following is None
        current = following


def _read_record(src: BinaryIO, limit: int) -> bytes | None:
    """One length-prefixed sealed chunk, or None at the end of the stream."""
    raw = src.read(4)
    if not raw:
        return None
    if len(raw) < 4:
        raise TruncatedSnapshotError("the snapshot ends inside a chunk")
    (length,) = _LEN.unpack(raw)
    if length > limit:
        raise TamperedSnapshotError(f"a chunk claims {length} bytes (at most {limit})")
    body = src.read(length)
    if len(body) < length:
        raise TruncatedSnapshotError("the snapshot ends inside a chunk")
    return body


def _open_chunk(
    aead: AESGCM, prefix: bytes, index: int, sealed: bytes, last: bool, aad: bytes
) -> bytes:
    """Chunk ``index``'s plaintext, authenticated; a stream cut after a whole chunk
    (one that opens only as a middle chunk) is ``TruncatedSnapshotError``."""
    try:
        return aead.decrypt(_nonce(prefix, index, last), sealed, aad)
    except InvalidTag:
        if last:
            try:
                aead.decrypt(_nonce(prefix, index, False), sealed, aad)
            except InvalidTag:
                pass
            else:
                raise TruncatedSnapshotError(
                    f"the snapshot stops after chunk {index}; its last chunk is missing"
                ) from None
        raise TamperedSnapshotError(f"chunk {index} of the snapshot fails authentication") from None


#: what a Replicator accepts as its snapshot key: a raw 32-byte key, a passphrase, a
#: key ring, or a source of one read at each publish and restore (a scope's keys)
SnapshotSecret = SnapshotKey | Passphrase | KeyRing | KeySource | bytes
