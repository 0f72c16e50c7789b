"""Tombstone retention: deletes are remembered for a while, then forgotten.

A delete travels as a tombstone so that every device learns of it. Kept for
ever, tombstones would make every store and every device grow with the whole
history of deletes, so both sides forget them after a **retention period**
(``Replicator(tombstone_retention=...)``, 90 days by default):

* **locally**, acknowledged deletes older than the retention are pruned at
  every sync (one indexed range delete: the cost follows what is pruned);
* **remotely**, tombstones the store committed before the retention horizon
  are purged by a sync (at most once a day per device, a bounded number per
  collection, of the collections the device writes: download-only and
  upload-only ones belong to the service, and the security rules give a
  device no delete there) or by ``replicator compact`` (all of them, for an
  operator).
  A purge first raises the collection's **horizon** in the store.

A device whose cursor for a collection is below the horizon was offline
longer than the retention and may have missed deletes whose tombstones are
gone. The download notices it (one read of the horizons per sync with
something to download), downloads that collection again from the start, and
reconciles: rows the remote no longer holds are deleted locally, except rows
edited here since, which are kept and uploaded again (a device never loses
its own unsynced work), each reported as a ``"restored"`` resolution. The
collections recovered are in ``SyncReport.recovered``. Recovery is resumable:
the ids seen so far are stored with each page, so a sync killed part-way
continues where it stopped.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable

import peewee

from ..model import collection_name, remote_columns
from ..report import Applied, Resolution
from ..stores.base import Compactable, RemoteStore
from .context import SyncContext
from .foreign_keys import blockers, delete_local
from .rows import fetch_row, mark_engine_edit

#: how long deletes are remembered when the app does not say
DEFAULT_RETENTION = _dt.timedelta(days=90)
#: a sync purges remote tombstones at most this often
PURGE_INTERVAL = _dt.timedelta(days=1)
#: tombstones one sync purges per collection (``compact`` has no limit)
SYNC_PURGE_LIMIT = 2000
_BATCH = 400


def purge(
    remote: RemoteStore,
    collections: Iterable[str],
    before: _dt.datetime,
    *,
    limit: int | None = None,
    on_purged: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Purge the tombstones of ``collections`` committed before ``before`` (store time).

    Returns collection → tombstones purged. ``limit`` bounds each collection
    (``None``: until none is left). A store without the capability purges nothing.
    """
    out: dict[str, int] = {}
    if not isinstance(remote, Compactable):
        return out
    when = before if before.tzinfo else before.replace(tzinfo=_dt.timezone.utc)
    for coll in collections:
        done = 0
        while limit is None or done < limit:
            step = _BATCH if limit is None else min(_BATCH, limit - done)
            n = remote.purge_tombstones(coll, when, step)
            done += n
            if n:
                if on_purged is not None:
                    on_purged(coll, done)
            else:
                break
        if done:
            out[coll] = done
    return out


def maintain(ctx: SyncContext, retention: _dt.timedelta | None) -> dict[str, int]:
    """A sync's share of retention: prune local acknowledged deletes, and purge remote
    tombstones of the collections this device writes if it has not done so for
    ``PURGE_INTERVAL``."""
    if retention is None:
        return {}
    device_now = ctx.clock().astimezone(_dt.timezone.utc).replace(tzinfo=None)
    ctx.local.prune_acked_tombstones((device_now - retention).isoformat(sep=" "))
    if not isinstance(ctx.remote, Compactable):
        return {}
    store_now = ctx.store_now()
    last = ctx.local.last_purge
    if last is not None and store_now - last < min(PURGE_INTERVAL, retention):
        return {}
    purged = purge(
        ctx.remote,
        [collection_name(m) for m in ctx.pushed()],  # what it writes: not reference data
        store_now - retention,
        limit=SYNC_PURGE_LIMIT,
    )
    ctx.local.set_device(last_purge=store_now.isoformat(sep=" "))
    return purged


def stale(cursor: str | None, horizon: str | None) -> bool:
    """Whether a device at ``cursor`` may have missed a purged tombstone."""
    return cursor is not None and horizon is not None and cursor < horizon


def reconcile(ctx: SyncContext, model: type[peewee.Model]) -> Applied:
    """After a full download of ``model``'s collection: rows the remote no longer holds
    go, unless they were edited here since (kept, and created again remotely).
    The caller holds an ``applying()`` transaction and ends the recovery in it;
    returns what was deleted and kept, for the caller to fold once it committed."""
    out = Applied()
    for doc_id, dirty in ctx.local.synced_but_unseen(collection_name(model)):
        gone_remotely(ctx, model, doc_id, dirty, out)
    return out


def gone_remotely(
    ctx: SyncContext, model: type[peewee.Model], doc_id: str, dirty: bool, out: Applied
) -> None:
    """The row ``doc_id``, which the remote once held, is no longer there (its delete's
    tombstone was purged): it goes, unless it was edited here since (``dirty``) or a
    ``RESTRICT`` child still needs it; then it is kept and created again remotely."""
    coll = collection_name(model)
    row = fetch_row(ctx, model, doc_id)
    if row is None:  # a cascade removed it already
        return
    if not dirty and not blockers(ctx, model, doc_id):
        delete_local(ctx, model, doc_id, out, pending=False)
        return
    if not dirty:
        mark_engine_edit(ctx, model, doc_id, {})
    ctx.db.execute_sql(
        f'UPDATE "{coll}" SET "serverId" = NULL, "syncVersion" = NULL WHERE id = ?', (doc_id,)
    )
    ctx.local.drop_base(coll, doc_id)
    ctx.local.forget_sent(coll, [doc_id])
    local = {c: row[c] for c in remote_columns(model)}
    out.resolved(
        Resolution(
            coll,
            doc_id,
            "restored",
            local,
            None,
            None,
            local,
            "retention: deleted remotely longer ago than the tombstone retention;"
            " kept because this device still needs it",
        )
    )
