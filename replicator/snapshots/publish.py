"""The snapshot phase of a sync: decide under the strategy, and publish (the Big
Brother rule).

It runs in two steps, and the engine runs what lies between them:

1. :func:`snapshot_due` says whether a publish may be due, having read the
   manifest (and noted whether a new snapshot appeared since this device last
   looked); if this device uploaded, the engine then runs a catch-up download,
   so the cursors move past its own uploads and a device restoring the
   snapshot does not download them again;
2. :func:`publish_due` asks the strategy (by default: only when this device's
   watermarks are strictly newer than the manifest's, so it holds the
   freshest data of all devices) and publishes; if it published, the engine
   registers the device, so the Devices collection learns the new generation
   and a later rollback of the manifest is detectable by every device.

Invariants:

* never publishes while anything is unsynced, whatever the strategy says: a
  snapshot holding a row no other device can have would make a device that
  restores it take that row for synced;
* publishing is a conditional write of the manifest against the version read
  before deciding: when another device published first, the decision is
  taken again against the new manifest, and the device tries again as long as
  the strategy still wants its snapshot (under Big Brother: while it is still
  strictly the freshest), at most :data:`PUBLISH_ATTEMPTS` times; each loss
  means another device's manifest went in, so the attempts make progress.
  Losing them all is a retryable ``TransientError`` in the report, never a
  silent skip (docs/notes/manifest-swap.md);
* this module runs no other phase: it neither downloads nor registers.

Making, sealing and uploading the file is in ``write.py``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..errors import PreconditionFailed, TransientError
from ..report import Phase
from ..stores.base import BlobStore, RemoteStore
from ..strategies.snapshot import (
    SnapshotDecision,
    SnapshotStrategy,
    ever_publishes,
    snapshots_kept,
)
from ..sync.context import SyncContext
from .crypto import Kek, SnapshotSecret
from .manifest import Current, Manifest, read_current, resolve_key
from .write import write_snapshot

#: how many times one sync tries to swap the manifest while the strategy still wants it
PUBLISH_ATTEMPTS = 5


@attrs.frozen
class Due:
    """A publish the strategy may want: the key (a ring as read for this sync: the
    publish seals under its newest generation without reading it again), the
    passphrase parameters if any, and the manifest as read before deciding (the
    conditional write of the new manifest is against it)."""

    kek: Kek
    current: Current
    kdf: dict[str, Any] | None = None


def snapshot_due(
    ctx: SyncContext,
    *,
    blobs: BlobStore,
    key: SnapshotSecret,
    strategy: SnapshotStrategy,
    tables: Sequence[str],
) -> Due | None:
    """The first step: ``None`` when no publish can be due (the strategy never
    publishes, or rows are unsynced), else the manifest read to decide against.

    Reading it also restarts the count of changes since the last snapshot when
    a new snapshot (this device's or another's) appeared since it last looked.
    """
    if not ever_publishes(strategy) or ctx.local.pending_total(tables):
        return None
    kek, kdf = resolve_key(blobs, key, create=True)
    current = read_current(blobs, kek)
    manifest = current.manifest
    seen = None if manifest is None else manifest.snapshot_id
    if seen != ctx.local.manifest_seen:
        # a new snapshot appeared (ours or another device's): count afresh from it
        ctx.local.set_device(manifest_seen=seen, changes_since_snapshot=0)
    return Due(kek, current, kdf)


def publish_due(
    ctx: SyncContext,
    due: Due,
    *,
    blobs: BlobStore,
    key: SnapshotSecret,
    strategy: SnapshotStrategy,
    db_path: Path,
    tables: Sequence[str],
) -> Manifest | None:
    """The second step: publish if ``strategy`` says so; return the manifest
    published (its snapshot id and generation), or ``None``.

    A lost race is decided again against the manifest that won; if the strategy
    still wants this device's snapshot after :data:`PUBLISH_ATTEMPTS` lost races,
    ``TransientError``.

    Run after the catch-up download, so the watermarks decided on (and
    published) are past this device's own uploads. The caller registers the
    device after a publish, so the Devices collection learns the generation.
    """
    current = due.current
    for _attempt in range(PUBLISH_ATTEMPTS):
        decision = _decision(ctx, current.manifest, tables)
        if not strategy.should_publish(decision):
            return None
        ctx.progress("snapshot", None, 0)
        try:
            published = write_snapshot(
                connection=ctx.db.connection(),
                db_path=db_path,
                blobs=blobs,
                key=key if due.kdf is not None else due.kek,  # a passphrase: its params
                watermarks=decision.watermarks,
                seen_position=ctx.local.seen_position,
                device_name=ctx.local.device_name,
                current=current,
                generation=_highest_generation(ctx.remote),
                keep=snapshots_kept(strategy),
                tables=tables,
                on_bytes=byte_counter(ctx.progress, "snapshot"),
                now=ctx.store_now().replace(tzinfo=_dt.timezone.utc),
            )
        except PreconditionFailed:
            current = read_current(blobs, due.kek)  # another device won: decide again
            continue
        ctx.local.set_device(
            last_snapshot=f"published {published.snapshot_id}",
            manifest_seen=published.snapshot_id,
            changes_since_snapshot=0,
            snapshot_generation=published.generation,
        )
        return published
    raise TransientError(
        f"lost the race for the snapshot manifest {PUBLISH_ATTEMPTS} times while still due"
        " to publish (other devices kept publishing)",
        hint="sync again: the next sync publishes if this device is still the freshest",
    )


def _decision(
    ctx: SyncContext, manifest: Manifest | None, tables: Sequence[str]
) -> SnapshotDecision:
    """What the strategy is told: this device's watermarks against the manifest's."""
    return SnapshotDecision(
        watermarks=ctx.local.trackers(),
        manifest_watermarks=None if manifest is None else dict(manifest.watermarks),
        manifest_created=None if manifest is None else _dt.datetime.fromisoformat(manifest.created),
        dirty=ctx.local.pending_total(tables),
        now=_dt.datetime.now(_dt.timezone.utc),
        changes=ctx.local.changes_since_snapshot,
    )


def _highest_generation(remote: RemoteStore) -> int:
    """The highest snapshot generation any device says it published."""
    return max((d.snapshot_generation or 0 for d in remote.devices()), default=0)


def byte_counter(
    progress: Callable[[Phase, str | None, int, int | None], None],
    phase: Phase,
    total: int | None = None,
) -> Callable[[int], None]:
    """An ``on_bytes`` callback telling ``progress`` the running byte count of ``phase``."""
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        progress(phase, None, done, total)

    return count
