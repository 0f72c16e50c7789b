"""Publishing a snapshot after a sync (seed 002 §5, the Big Brother rule).

A device that leaves nothing unsynced asks its snapshot strategy whether it
should publish (by default: only when its watermarks are strictly newer than
the manifest's, so it holds the freshest data of all devices). Before
deciding, its cursors move past its own uploads, so a device restoring the
snapshot does not download them again. Publishing is a conditional write of
the manifest: when another device published first, the decision is taken
again against the new manifest (once). The work of making, sealing and
uploading the file is in ``snapshot.py``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from ..errors import PreconditionFailed
from ..report import Phase, Tally
from ..stores.base import BlobStore, RemoteStore
from ..strategies.snapshot import (
    SnapshotDecision,
    SnapshotStrategy,
    ever_publishes,
    snapshots_kept,
)
from ..sync.context import SyncContext
from ..sync.download import download
from ..sync.register import register
from .crypto import SnapshotSecret
from .manifest import Manifest, publish, read_current, resolve_key


@attrs.frozen
class Published:
    """What the phase did: the snapshot published (``None``: none), and what the
    catch-up download before deciding applied."""

    snapshot: str | None
    tally: Tally


def publish_if_due(
    ctx: SyncContext,
    *,
    blobs: BlobStore,
    key: SnapshotSecret,
    strategy: SnapshotStrategy,
    db_path: Path,
    tables: Sequence[str],
    uploaded: bool,
) -> Published:
    """Publish under ``strategy`` if it says so.

    Never publishes while anything is unsynced, whatever the strategy says: a
    snapshot holding a row no other device can have would make a device that
    restores it take that row for synced.
    """
    caught_up = Tally()
    if not ever_publishes(strategy) or ctx.local.pending_total(tables):
        return Published(None, caught_up)
    kek, _kdf = resolve_key(blobs, key, create=True)
    current = read_current(blobs, kek)
    manifest = current.manifest
    seen = None if manifest is None else manifest.snapshot_id
    if seen != ctx.local.manifest_seen:
        # a new snapshot appeared (ours or another device's): count afresh from it
        ctx.local.set_device(manifest_seen=seen, changes_since_snapshot=0)
    if uploaded:
        caught_up = download(ctx, catch_up_only=True).tally
    for _attempt in range(2):
        decision = _decision(ctx, manifest, tables)
        if not strategy.should_publish(decision):
            return Published(None, caught_up)
        ctx.progress("snapshot", None, 0)
        try:
            published = publish(
                connection=ctx.db.connection(),
                db_path=db_path,
                blobs=blobs,
                key=key,
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
            current = read_current(blobs, kek)  # another device won: decide again
            manifest = current.manifest
            continue
        ctx.local.set_device(
            last_snapshot=f"published {published.snapshot_id}",
            manifest_seen=published.snapshot_id,
            changes_since_snapshot=0,
            snapshot_generation=published.generation,
        )
        # the Devices collection learns the generation now: a later rollback of
        # the manifest to an older snapshot is then detectable by every device
        register(ctx)
        return Published(published.snapshot_id, caught_up)
    return Published(None, caught_up)


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
