"""The snapshot manifest, and the key that opens the snapshots.

Blob layout, under the store's prefix::

    snapshots/manifest.json     names the latest snapshot and the watermarks it covers
    snapshots/kdf.json          scrypt salt and parameters, when a passphrase is used
    snapshots/{id}.snap         immutable encrypted snapshots (format: crypto.py)

Invariants:

* the manifest is trusted only once authenticated: its MAC (keyed from the
  user's key) covers every claim, and each claim it shares with the snapshot's
  own authenticated header must agree with it (:func:`check_claims`), so a
  manifest can neither be edited nor point at a snapshot that is not its own;
* its ``generation`` grows by one with each publish, and publishers record
  theirs in the Devices collection, so a manifest rolled back to an older
  snapshot is refused (:func:`check_not_rolled_back`);
* the manifest and ``kdf.json`` are parsed strictly and never read past
  :data:`MAX_SMALL` bytes: a malformed or oversized object is tampering;
* a publisher never trusts an unreadable or unauthentic manifest: it is
  reported, and replaced by the next publish with a conditional write on
  whatever object is there (:func:`read_current`);
* ``kdf.json`` is written once, by whichever device creates it first; every
  device derives its key from the parameters read back, checked against a
  floor (no downgrade) and against the passphrase's key check value.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..errors import (
    BlobNotFoundError,
    ConfigurationError,
    PreconditionFailed,
    SnapshotError,
    SnapshotNotFoundError,
    TamperedSnapshotError,
    UnsupportedSnapshotError,
    WrongKeyError,
)
from ..stores.base import BlobStore, DeviceRecord
from .crypto import (
    Kek,
    KeyRing,
    KeySource,
    Passphrase,
    SnapshotKey,
    check_kdf,
    mac_key,
    new_kdf_params,
    opening_key,
    publishing_key,
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

    def verify(self, kek: Kek) -> None:
        """Authenticate the claims under ``kek`` (a ring: the generation the manifest's
        key check value names); ``WrongKeyError`` or ``TamperedSnapshotError``."""
        if self.kcv:
            kek = opening_key(
                kek,
                self.kcv,
                "the key does not open these snapshots (or the manifest's key check was altered)",
            )
        key = publishing_key(kek)
        if not self.mac:
            raise TamperedSnapshotError(
                "the snapshot manifest carries no MAC (altered, or made by an older replicator)",
                hint="publish a new snapshot from a device, or sync from scratch",
            )
        if not hmac.compare_digest(self.mac, _mac(key, self.claims())):
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


def read_manifest(blobs: BlobStore, kek: Kek | None = None) -> Manifest | None:
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


def read_current(blobs: BlobStore, kek: Kek) -> Current:
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
) -> tuple[Kek, dict[str, Any] | None]:
    """The KEK for ``key`` (raw bytes, a SnapshotKey, a Passphrase, a KeyRing, or a
    KeySource, whose ring is read now) and the kdf params, if any."""
    if isinstance(key, bytes):
        key = SnapshotKey(key)
    if isinstance(key, SnapshotKey):
        return key, None
    if not isinstance(key, Passphrase) and isinstance(key, KeySource):
        ring = key.ring()
        if not isinstance(ring, KeyRing):
            raise ConfigurationError(
                f"{type(key).__name__}.ring() gave a {type(ring).__name__}, not a KeyRing"
            )
        return ring, None
    if not isinstance(key, Passphrase):
        raise ConfigurationError(
            "snapshot key must be 32 bytes, a SnapshotKey, a Passphrase or a KeyRing",
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
