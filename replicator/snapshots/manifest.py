"""Encrypted database snapshots in a blob store: publish (Big Brother) and restore.

Blob layout, under the store's prefix::

    snapshots/manifest.json     names the latest snapshot and the watermarks it covers
    snapshots/kdf.json          scrypt salt and parameters, when a passphrase is used
    snapshots/{id}.snap         immutable encrypted snapshots (format: crypto.py)

Publishing: a consistent copy of the live database (``VACUUM INTO``) with the
device-local tables emptied, encrypted to a temporary file, uploaded under a
new id, then the manifest is swapped with a conditional write against the
version read before deciding. Of two racing devices, the one whose manifest
write loses re-reads the manifest and only retries if it still holds newer
data; otherwise it deletes its upload and skips. The last ``keep`` snapshots
are kept.

Restoring: plan (read the manifest), download while hashing (SHA-256 checked
against the manifest) and decrypting (AEAD checked chunk by chunk) into a
temporary file beside the database, ``PRAGMA integrity_check``, then install
the synced tables in one transaction (``restore.py``). Any failure leaves the
database as it was.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import hmac
import io
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from ..errors import (
    BlobNotFoundError,
    ConfigurationError,
    PreconditionFailed,
    SnapshotError,
    SnapshotNotFoundError,
    TamperedSnapshotError,
    TruncatedSnapshotError,
    UnsupportedSnapshotError,
    WrongKeyError,
)
from ..local import OWN_TABLES, forget_installation
from ..stores.base import BlobStore, DeviceRecord
from .crypto import (
    Passphrase,
    SnapshotKey,
    SnapshotSecret,
    check_kdf,
    decrypt_stream,
    encrypt_stream,
    mac_key,
    new_kdf_params,
    require,
)

MANIFEST = "snapshots/manifest.json"
KDF = "snapshots/kdf.json"
FORMAT = 1


#: snapshot ids: the creation time (UTC, microseconds) and 8 random hex digits
SNAPSHOT_ID = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")
#: most bytes a manifest or kdf.json may take
MAX_SMALL = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


@attrs.frozen
class Manifest:
    """What the blob store says about its latest snapshot, authenticated.

    ``mac`` is an HMAC of every other field under a key derived from the user's
    key, so nobody without that key can edit a claim; each claim is also
    written in the snapshot's authenticated header, and a restore checks that
    the two agree, so a manifest cannot point at a snapshot that is not its
    own. ``generation`` grows by one with each publish; publishers record theirs
    in the Devices collection, so a rolled-back (replayed) manifest is caught.
    """

    snapshot_id: str
    key: str
    sha256: str
    size: int
    created: str
    watermarks: Mapping[str, str]
    seen_position: str | None
    device_name: str
    history: tuple[str, ...]
    generation: int = 0
    kcv: str = ""  # the key check value: tells a wrong key from an altered manifest
    mac: str = ""
    etag: str = ""

    def claims(self) -> dict[str, Any]:
        """Everything the manifest asserts (all but the MAC and the etag)."""
        return {
            "format": FORMAT,
            "latest": self.snapshot_id,
            "key": self.key,
            "sha256": self.sha256,
            "size": self.size,
            "created": self.created,
            "watermarks": dict(self.watermarks),
            "seen_position": self.seen_position,
            "device_name": self.device_name,
            "history": list(self.history),
            "generation": self.generation,
            "kcv": self.kcv,
        }

    def header_claims(self) -> dict[str, Any]:
        """The claims the snapshot's own header carries (all but its size, hash and history)."""
        skip = ("sha256", "size", "history", "key", "kcv")
        return {k: v for k, v in self.claims().items() if k not in skip}

    def signed(self, kek: SnapshotKey) -> Manifest:
        keyed = attrs.evolve(self, kcv=kek.check_value())
        return attrs.evolve(keyed, mac=_mac(kek, keyed.claims()))

    def verify(self, kek: SnapshotKey) -> None:
        if self.kcv and not hmac.compare_digest(self.kcv, kek.check_value()):
            raise WrongKeyError(
                "the key does not open these snapshots (or the manifest's key check was altered)"
            )
        if not self.mac:
            raise TamperedSnapshotError(
                "the snapshot manifest carries no MAC (altered, or made by an older replicator)",
                hint="publish a new snapshot from a device, or sync from scratch",
            )
        if not hmac.compare_digest(self.mac, _mac(kek, self.claims())):
            raise TamperedSnapshotError(
                "the snapshot manifest fails authentication: it was altered, or was not made"
                " with this key"
            )

    def to_json(self) -> bytes:
        return json.dumps({**self.claims(), "mac": self.mac}, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, etag: str) -> Manifest:
        """Parse strictly: any field of the wrong type or form is ``TamperedSnapshotError``."""
        try:
            d = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise TamperedSnapshotError("the snapshot manifest is not JSON") from exc
        if not isinstance(d, dict):
            raise TamperedSnapshotError("the snapshot manifest is not a map")
        if d.get("format") != FORMAT:
            raise UnsupportedSnapshotError(f"manifest format {d.get('format')!r} is not {FORMAT}")
        missing = {"seen_position", "kcv", "mac"} - set(d)
        if missing:
            raise TamperedSnapshotError(f"the manifest lacks {', '.join(sorted(missing))}")
        sid = _want(d, "latest", str)
        if not SNAPSHOT_ID.fullmatch(sid):
            raise TamperedSnapshotError(f"the manifest names a malformed snapshot id {sid[:40]!r}")
        key = _want(d, "key", str)
        if key != f"snapshots/{sid}.snap":
            raise TamperedSnapshotError("the manifest's object key does not match its snapshot id")
        sha = _want(d, "sha256", str)
        if not _HEX64.fullmatch(sha):
            raise TamperedSnapshotError("the manifest's sha256 is malformed")
        size = _want(d, "size", int)
        created = _want(d, "created", str)
        try:
            _dt.datetime.fromisoformat(created)
        except ValueError:
            raise TamperedSnapshotError("the manifest's creation time is malformed") from None
        marks = _want(d, "watermarks", dict)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in marks.items()):
            raise TamperedSnapshotError("the manifest's watermarks are malformed")
        seen = d.get("seen_position")
        if seen is not None and not isinstance(seen, str):
            raise TamperedSnapshotError("the manifest's seen position is malformed")
        history = _want(d, "history", list)
        if not all(isinstance(h, str) and SNAPSHOT_ID.fullmatch(h) for h in history):
            raise TamperedSnapshotError("the manifest's history names a malformed snapshot id")
        generation = _want(d, "generation", int)
        mac, kcv = d.get("mac", ""), d.get("kcv", "")
        if not isinstance(mac, str) or not isinstance(kcv, str) or size < 0 or generation < 0:
            raise TamperedSnapshotError("the manifest's size, generation or MAC is malformed")
        return cls(
            snapshot_id=sid,
            key=key,
            sha256=sha,
            size=size,
            created=created,
            watermarks=marks,
            seen_position=seen,
            device_name=_want(d, "device_name", str),
            history=tuple(history),
            generation=generation,
            kcv=kcv,
            mac=mac,
            etag=etag,
        )


def _want(d: Mapping[str, Any], name: str, kind: type) -> Any:
    return require(d, name, kind, "the manifest")


def _mac(kek: SnapshotKey, claims: Mapping[str, Any]) -> str:
    text = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(mac_key(kek), text, hashlib.sha256).hexdigest()


class _Capped(io.BytesIO):
    """A buffer that refuses more than ``MAX_SMALL`` bytes (a huge object is an attack)."""

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > MAX_SMALL:
            raise TamperedSnapshotError(f"a small snapshot object is over {MAX_SMALL} bytes")
        return super().write(data)


def _read_small(blobs: BlobStore, key: str) -> tuple[bytes, str] | None:
    """A small object's bytes and etag, or None if it does not exist."""
    info = blobs.head(key)
    if info is not None and info.size > MAX_SMALL:
        raise TamperedSnapshotError(f"{key} is {info.size} bytes: not a replicator object")
    buf = _Capped()
    try:
        info = blobs.get(key, buf)
    except BlobNotFoundError:
        return None
    return buf.getvalue(), info.etag


def read_manifest(blobs: BlobStore, kek: SnapshotKey | None = None) -> Manifest | None:
    """The manifest, parsed strictly and, given the KEK, authenticated; None if there is none."""
    found = _read_small(blobs, MANIFEST)
    if found is None:
        return None
    manifest = Manifest.from_json(*found)
    if kek is not None:
        manifest.verify(kek)
    return manifest


@attrs.frozen
class Current:
    """The manifest as a publisher sees it: valid, absent, or unusable (to be replaced)."""

    manifest: Manifest | None
    etag: str | None  # of whatever object is there, valid or not
    problem: str | None = None


def read_current(blobs: BlobStore, kek: SnapshotKey) -> Current:
    """The manifest for a publish decision; an unreadable or unauthentic one is reported,
    not trusted, and replaced by the next publish (with a conditional write on its etag)."""
    found = _read_small(blobs, MANIFEST)
    if found is None:
        return Current(None, None)
    try:
        manifest = Manifest.from_json(*found)
        manifest.verify(kek)
    except SnapshotError as exc:
        return Current(None, found[1], str(exc))
    return Current(manifest, found[1])


def check_not_rolled_back(manifest: Manifest, devices: Sequence[DeviceRecord]) -> None:
    """Refuse a manifest older than a snapshot some device says it published (a replay)."""
    for device in devices:
        claimed = device.snapshot_generation or 0
        if claimed > manifest.generation:
            raise TamperedSnapshotError(
                f"the manifest names snapshot generation {manifest.generation}, but device"
                f" {device.name or device.installation_id} published generation {claimed}:"
                " the manifest was rolled back to an older snapshot",
                hint="someone replayed an old manifest; publish anew from an up-to-date"
                " device, or sync from scratch",
            )


def check_claims(manifest: Manifest, header: Mapping[str, Any], kdf: Any) -> None:
    """The manifest and the snapshot's authenticated header must tell the same story."""
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise TamperedSnapshotError("the snapshot header carries no claims")
    for name, value in manifest.header_claims().items():
        if meta.get(name) != value:
            raise TamperedSnapshotError(
                f"the manifest and snapshot {manifest.snapshot_id} disagree on {name}:"
                " they do not belong together"
            )
    if kdf is not None and {k: header.get("kdf", {}).get(k) for k in ("salt", "n", "r", "p")} != {
        k: kdf.get(k) for k in ("salt", "n", "r", "p")
    }:
        raise TamperedSnapshotError("the snapshot's passphrase parameters are not kdf.json's")


def resolve_key(
    blobs: BlobStore, key: object, *, create: bool
) -> tuple[SnapshotKey, dict[str, Any] | None]:
    """The KEK for ``key`` (raw bytes, SnapshotKey or Passphrase) and the kdf params, if any."""
    if isinstance(key, bytes):
        key = SnapshotKey(key)
    if isinstance(key, SnapshotKey):
        return key, None
    if not isinstance(key, Passphrase):
        raise ConfigurationError(
            "snapshot key must be 32 bytes, a SnapshotKey or a Passphrase",
            hint="pass key=SnapshotKey(...) or key=Passphrase('...') to Replicator",
        )
    found = _read_small(blobs, KDF)
    if found is None:
        if not create:
            raise SnapshotNotFoundError("no passphrase parameters beside the snapshots")
        # if another device creates them first, its parameters are the ones read back
        fresh = json.dumps(new_kdf_params(key)).encode()
        with contextlib.suppress(PreconditionFailed):
            blobs.put(KDF, io.BytesIO(fresh), if_none_match=True)
        found = _read_small(blobs, KDF)
        if found is None:
            raise SnapshotNotFoundError("the passphrase parameters vanished while being created")
    try:
        kdf = check_kdf(json.loads(found[0]))
    except (ValueError, RecursionError) as exc:
        raise TamperedSnapshotError("snapshots/kdf.json is not JSON") from exc
    kek = key.derive(kdf)
    if "kcv" in kdf and not hmac.compare_digest(kdf["kcv"], kek.check_value()):
        raise WrongKeyError(
            "the passphrase does not match the one the snapshots were made with",
            hint="use the passphrase the snapshots were made with (or snapshots/kdf.json"
            " was replaced)",
        )
    return kek, kdf


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


def publish(
    *,
    connection: Any,
    db_path: Path,
    blobs: BlobStore,
    key: SnapshotSecret,
    watermarks: Mapping[str, str],
    seen_position: str | None,
    device_name: str,
    current: Current,
    generation: int = 0,
    keep: int = 3,
    on_bytes: Callable[[int], None] | None = None,
    tables: Sequence[str] = (),
    now: _dt.datetime | None = None,
) -> Manifest:
    """Upload a snapshot and swap the manifest from ``current`` to it.

    ``generation`` is the highest generation known (from the Devices
    collection); the new manifest's is one more than that and than the
    current manifest's. Raises ``PreconditionFailed`` if the manifest changed
    since ``current`` was read (the uploaded object is deleted again). The
    plaintext copy lives only inside this call.
    """
    kek, kdf = resolve_key(blobs, key, create=True)
    created = now or _dt.datetime.now(_dt.timezone.utc)
    snapshot_id = created.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
    object_key = f"snapshots/{snapshot_id}.snap"
    expected = current.manifest
    history = (snapshot_id, *(expected.history if expected else ()))
    manifest = Manifest(
        snapshot_id=snapshot_id,
        key=object_key,
        sha256="0" * 64,
        size=0,
        created=created.isoformat(),
        watermarks=dict(watermarks),
        seen_position=seen_position,
        device_name=device_name,
        history=history[:keep],
        generation=max(generation, expected.generation if expected else 0) + 1,
    )
    with temp_beside(db_path, "snapshot") as plain, temp_beside(db_path, "sealed") as sealed:
        write_plain_copy(connection, plain, tables)
        with open(plain, "rb") as src, open(sealed, "wb") as dst:
            encrypt_stream(src, dst, kek, manifest.header_claims(), kdf=kdf, on_bytes=on_bytes)
        plain.unlink()  # the plaintext never outlives the encryption
        with open(sealed, "rb") as src:
            info = blobs.put(object_key, src)
    manifest = attrs.evolve(manifest, sha256=info.sha256, size=info.size).signed(kek)
    try:
        if current.etag is None:
            blobs.put(MANIFEST, io.BytesIO(manifest.to_json()), if_none_match=True)
        else:
            blobs.put(MANIFEST, io.BytesIO(manifest.to_json()), if_match=current.etag)
    except PreconditionFailed:
        blobs.delete(object_key)
        raise
    for old in history[keep:]:
        blobs.delete(f"snapshots/{old}.snap")
    _delete_orphans(blobs, {*manifest.history}, created)
    return manifest


#: an uploaded snapshot no manifest names is deleted once this old (a publisher
#: killed between its upload and its manifest swap); younger ones may be in flight
ORPHAN_AGE = _dt.timedelta(hours=1)


def _delete_orphans(blobs: BlobStore, named: set[str], now: _dt.datetime) -> None:
    for info in blobs.list("snapshots/"):
        name = info.key.rsplit("/", 1)[-1]
        if not name.endswith(".snap") or name[: -len(".snap")] in named:
            continue
        sid = name[: -len(".snap")]
        if not SNAPSHOT_ID.fullmatch(sid):
            continue
        made = _dt.datetime.strptime(sid[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=_dt.timezone.utc)
        if now - made > ORPHAN_AGE:
            blobs.delete(info.key)


class _HashingReader:
    """Reads a stream while hashing and counting what passes (progress included)."""

    def __init__(self, stream: Any, on_bytes: Callable[[int], None] | None) -> None:
        self.stream = stream
        self.on_bytes = on_bytes
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.stream.read(n)
        while 0 < len(data) < n:  # network streams may return short reads
            more = self.stream.read(n - len(data))
            if not more:
                break
            data += more
        self.digest.update(data)
        self.size += len(data)
        if self.on_bytes is not None and data:
            self.on_bytes(len(data))
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def open_latest(
    blobs: BlobStore, key: SnapshotSecret
) -> tuple[Manifest, SnapshotKey, dict[str, Any] | None]:
    """Plan a restore: the KEK (kdf.json checked), and the authenticated manifest."""
    try:
        kek, kdf = resolve_key(blobs, key, create=False)
    except SnapshotNotFoundError:
        if isinstance(key, Passphrase) and blobs.head(MANIFEST) is not None:
            raise WrongKeyError(
                "the snapshots were made with a raw key, not a passphrase",
                hint="use the key file the snapshots were made with",
            ) from None
        raise
    manifest = read_manifest(blobs, kek)
    if manifest is None:
        raise SnapshotNotFoundError("the blob store holds no snapshot yet")
    return manifest, kek, kdf


def older(blobs: BlobStore, manifest: Manifest, snapshot_id: str) -> Manifest:
    """A manifest for an older snapshot, one the authenticated manifest's ``history``
    names: its object's size and hash as the store reports them, its claims still
    to be read from its own authenticated header (``fetch_and_decrypt(...,
    older=True)`` reads them and checks that the header names ``snapshot_id``)."""
    if snapshot_id == manifest.snapshot_id:
        return manifest
    if snapshot_id not in manifest.history:
        kept = ", ".join(manifest.history) or "none"
        raise SnapshotNotFoundError(
            f"snapshot {snapshot_id} is not one the manifest keeps (kept: {kept})",
            hint="replicator snapshot list shows the snapshots there are",
        )
    key = f"snapshots/{snapshot_id}.snap"
    info = blobs.head(key)
    if info is None:
        raise SnapshotNotFoundError(f"snapshot {snapshot_id} is missing from the blob store")
    return attrs.evolve(
        manifest,
        snapshot_id=snapshot_id,
        key=key,
        sha256=info.sha256,
        size=info.size,
        watermarks={},
        seen_position=None,
        history=(),
    )


def fetch_and_decrypt(
    blobs: BlobStore,
    manifest: Manifest,
    key: SnapshotSecret,
    dest: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
    is_older: bool = False,
) -> dict[str, Any]:
    """Download ``manifest``'s snapshot and write the verified plaintext database to ``dest``.

    With ``is_older`` (a manifest made by :func:`older`), the claims come from the
    snapshot's header, which must name the snapshot asked for.

    Checks, in one pass over the download: every chunk's AEAD tag (the bytes are
    the key holder's), the object's size and SHA-256 against the manifest, then
    that the manifest's claims equal the snapshot's authenticated header, and
    SQLite's ``quick_check`` on the result. Raises a ``SnapshotError``; ``dest``
    is the only file written.
    """
    kek, kdf = resolve_key(blobs, key, create=False)
    try:
        stream = blobs.open(manifest.key)
    except BlobNotFoundError as exc:
        raise SnapshotNotFoundError(
            f"snapshot {manifest.snapshot_id} named by the manifest is missing"
        ) from exc
    # decrypt while downloading: every chunk is authenticated as it arrives, and
    # the whole object is checked against the manifest's SHA-256 at the end
    try:
        reader = _HashingReader(stream, on_bytes)
        with open(dest, "wb") as out:
            try:
                header = decrypt_stream(reader, out, kek)  # type: ignore[arg-type]
            except TruncatedSnapshotError:
                if manifest.size and reader.size < manifest.size:
                    raise TruncatedSnapshotError(
                        f"got {reader.size} of {manifest.size} bytes of {manifest.snapshot_id}"
                    ) from None
                raise
            reader.drain()
    finally:
        stream.close()
    if reader.size < manifest.size:
        raise TruncatedSnapshotError(
            f"got {reader.size} of {manifest.size} bytes of {manifest.snapshot_id}"
        )
    known_hash = manifest.sha256 or not is_older  # a store may not report an object's hash
    if reader.size != manifest.size or (
        known_hash and reader.digest.hexdigest() != manifest.sha256
    ):
        raise TamperedSnapshotError(
            f"snapshot {manifest.snapshot_id} does not match its size and SHA-256 in the manifest"
        )
    if is_older:
        meta = header.get("meta")
        if not isinstance(meta, dict) or meta.get("latest") != manifest.snapshot_id:
            raise TamperedSnapshotError(
                f"the object of snapshot {manifest.snapshot_id} holds another snapshot"
            )
    else:
        check_claims(manifest, header, kdf)
    check = sqlite3.connect(dest)
    try:
        result = check.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise TamperedSnapshotError(f"the restored file is not a SQLite database: {exc}") from exc
    finally:
        check.close()
    if result != "ok":
        raise TamperedSnapshotError(f"the restored database fails its integrity check: {result}")
    return header
