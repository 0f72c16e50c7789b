"""Writing a snapshot into the blob store: seal, upload, swap the manifest, prune.

Invariants:

* the plaintext copy lives only inside :func:`write_snapshot`, beside the
  database, and is deleted as soon as it is encrypted; the blob store only
  ever receives ciphertext;
* a snapshot object is immutable and uploaded under a new id before the
  manifest names it; the manifest is then swapped with a conditional write
  against the version read before deciding (or created only if there is
  none), so of two racing publishers exactly one wins, and the loser deletes
  its own upload again (``PreconditionFailed`` tells it to decide anew);
* a failed swap is judged by the manifest read back, never by the error alone:
  an answer can be lost after the write landed, and the client's retry then
  meets "precondition failed". A manifest that names this upload (as its
  latest or in its history) is this publish's success, and an upload a
  manifest names is never deleted; an upload is deleted only once the manifest
  read back proves it unnamed (docs/notes/manifest-swap.md);
* the new manifest's generation is one more than both the current
  manifest's and the highest any device says it published;
* the manifest keeps the last ``keep`` snapshots; older ones, and objects no
  manifest names that are older than :data:`ORPHAN_AGE` (a publisher killed
  between its upload and its swap), are deleted; younger unnamed objects may
  be another publisher's upload in flight, and stay. Once the manifest is
  swapped the publish has happened: a clean-up that fails (a listing denied,
  the network gone) is logged and left to the next publish's sweep.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..errors import RemoteError, SnapshotError
from ..stores.base import BlobStore
from .crypto import Kek, SnapshotKey, SnapshotSecret, encrypt_stream, publishing_key
from .files import plain_source, temp_beside
from .manifest import MANIFEST, SNAPSHOT_ID, Current, Manifest, read_current, resolve_key

log = logging.getLogger(__name__)

#: an uploaded snapshot no manifest names is deleted once this old (a publisher
#: killed between its upload and its manifest swap); younger ones may be in flight
ORPHAN_AGE = _dt.timedelta(hours=1)


def write_snapshot(
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
    sealer = publishing_key(kek)  # a ring's newest generation seals the snapshot and manifest
    created = now or _dt.datetime.now(_dt.timezone.utc)
    manifest, dropped = _draft(
        current,
        created,
        watermarks=watermarks,
        seen_position=seen_position,
        device_name=device_name,
        generation=generation,
        keep=keep,
    )
    with temp_beside(db_path, "snapshot") as plain, temp_beside(db_path, "sealed") as sealed:
        _seal(connection, tables, plain, sealed, sealer, kdf, manifest.header_claims(), on_bytes)
        with open(sealed, "rb") as src:
            info = blobs.put(manifest.key, src)
    manifest = attrs.evolve(manifest, sha256=info.sha256, size=info.size).signed(sealer)
    manifest = _swap_manifest(blobs, manifest, current, kek)
    try:
        for old in dropped:
            blobs.delete(f"snapshots/{old}.snap")
        _delete_orphans(blobs, {*manifest.history}, created)
    except RemoteError as exc:  # published all the same: the next publish sweeps again
        log.warning(
            "snapshot %s published; older snapshots not cleaned up: %s (the next publish"
            " tries again)",
            manifest.snapshot_id,
            type(exc).__name__,
        )
    return manifest


def _draft(
    current: Current,
    created: _dt.datetime,
    *,
    watermarks: Mapping[str, str],
    seen_position: str | None,
    device_name: str,
    generation: int,
    keep: int,
) -> tuple[Manifest, tuple[str, ...]]:
    """The new manifest before its object is uploaded (no hash, size or MAC yet), and
    the ids of the snapshots it no longer keeps."""
    snapshot_id = created.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]
    expected = current.manifest
    history = (snapshot_id, *(expected.history if expected else ()))
    manifest = Manifest(
        snapshot_id=snapshot_id,
        key=f"snapshots/{snapshot_id}.snap",
        sha256="0" * 64,
        size=0,
        created=created.isoformat(),
        watermarks=dict(watermarks),
        seen_position=seen_position,
        device_name=device_name,
        history=history[:keep],
        generation=max(generation, expected.generation if expected else 0) + 1,
    )
    return manifest, history[keep:]


def _seal(
    connection: Any,
    tables: Sequence[str],
    plain: Path,
    sealed: Path,
    kek: SnapshotKey,
    kdf: Mapping[str, Any] | None,
    claims: Mapping[str, Any],
    on_bytes: Callable[[int], None] | None,
) -> None:
    """Copy the synced tables into ``plain`` (in memory for an encrypted database) and
    encrypt it into ``sealed``."""
    with plain_source(connection, plain, tables) as src, open(sealed, "wb") as dst:
        encrypt_stream(src, dst, kek, claims, kdf=kdf, on_bytes=on_bytes)


def _swap_manifest(blobs: BlobStore, manifest: Manifest, current: Current, kek: Kek) -> Manifest:
    """Point the manifest at ``manifest`` if it is still ``current``, and return it.

    When the write fails (``PreconditionFailed``, or no answer), the manifest read back
    decides: naming ``manifest``'s snapshot, the write landed and its answer was lost
    (a success); read and not naming it, the upload is deleted and the failure raised;
    unreadable, the failure is raised and the upload left (the write may have landed;
    an unnamed upload is swept once older than ``ORPHAN_AGE``)."""
    body = manifest.to_json()
    try:
        if current.etag is None:
            blobs.put(MANIFEST, io.BytesIO(body), if_none_match=True)
        else:
            blobs.put(MANIFEST, io.BytesIO(body), if_match=current.etag)
        return manifest
    except RemoteError as exc:
        failure = exc
    try:
        now = read_current(blobs, kek)
    except (RemoteError, SnapshotError):
        raise failure from None
    named = now.manifest is not None and (
        manifest.snapshot_id == now.manifest.snapshot_id
        or manifest.snapshot_id in now.manifest.history
    )
    if named:
        log.info(
            "snapshot %s: the manifest write landed; its answer was lost", manifest.snapshot_id
        )
        return manifest
    with contextlib.suppress(RemoteError):  # if not now, the sweep of a later publish
        blobs.delete(manifest.key)
    raise failure


def _delete_orphans(blobs: BlobStore, named: set[str], now: _dt.datetime) -> None:
    """Delete the snapshot objects no manifest names once older than ``ORPHAN_AGE``."""
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
