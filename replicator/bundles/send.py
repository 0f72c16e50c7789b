"""The device's bundle step of a sync: upload-only rows go up as checksummed files.

A collection declared upload-only (``Bundles(..., collections=[Household])``)
is never pushed row by row and never downloaded. Each sync, after the
download, its unsynced rows (``isDirty`` = 1) are read in one transaction and
compiled into a **bundle**:

1. newline-delimited JSON, gzip-compressed (``format.py``): a header line (format,
   bundle id, device, collection, columns, app version, row count), then one row per
   line in SQLite form (``codec.encode_json``), at most ``max_rows`` rows and about
   ``max_bytes`` of JSON per bundle;
2. its SHA-256 computed, the bundle recorded locally with the ``syncRev`` of
   each row, then put in the ``BlobStore`` under ``{prefix}/{device}/{id}.ndjson.gz``
   with the checksum (on S3 the ``x-amz-checksum-sha256`` header, so the bucket
   refuses bytes damaged on the way);
3. an :class:`IngestRequest` (key, checksum, size, row count) sent to the
   campaign service (``HttpIngest``, or ``StoreIngest``: a document in
   the remote store's ``ingest_requests`` collection), which verifies and applies
   it (``ingest.py``);
4. once the service answers *accepted*, in one local transaction, every row
   unchanged since it was bundled is marked synced (``isDirty`` = 0,
   ``serverId`` = its id); rows the service refused keep its reason
   (``Replicator.refused``) and are not sent again until the app changes them.

The bundle id is fixed when the bundle is made, so sending a request again after
a lost answer never applies it twice: the service answers with what it recorded.
A bundle killed before its request was recorded is discarded (and its object
deleted) at the next sync, and its rows go in a new one; a request recorded but
unanswered is sent again. A row changed while its bundle was in flight stays
dirty and goes in the next bundle; the service keeps the later version.
Deleting an upload-only row locally removes it from this device only: bundles
carry rows, not deletes (a row deleted before it was bundled is never sent).

**Parents first**, as for row uploads: a row goes in a bundle only when every
parent it names (through a foreign key to a synced model) is on the remote,
i.e. has a ``serverId``: its row was uploaded, or its bundle accepted with it.
A parent whose bundle was rejected, is not decided yet, or that the service
refused holds its children back (they stay dirty, listed in
``SyncReport.rejected`` as waiting for it) until it is there, so the remote never
holds a child without its parent, not even for the time between two syncs.
Collections are bundled parents first; a collection whose rows name others of
it (a tree) is bundled again, from the start, while a pass frees rows that had
to wait.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence

import attrs
import peewee

from ..codec import encode_json
from ..errors import ConfigurationError, RemoteError
from ..local import BundleRecord
from ..model import collection_name, new_id, remote_columns, shift_time
from ..report import RowError
from ..stores.base import BlobStore
from ..stores.ingest import IngestRequest, IngestService
from ..sync.context import SyncContext
from ..sync.upload import WaitsForParent
from .format import Packed, bundle_header, pack, put_once

log = logging.getLogger(__name__)


@attrs.frozen
class Bundles:
    """How upload-only collections go up: as bundles in ``blobs``, announced to
    ``service``. ``collections`` are the upload-only models."""

    blobs: BlobStore
    service: IngestService
    collections: Sequence[type[peewee.Model]]
    #: most rows per bundle
    max_rows: int = 5000
    #: about the most bytes of (uncompressed) JSON per bundle
    max_bytes: int = 16 << 20
    #: where bundles go in the blob store
    prefix: str = "bundles"

    def __attrs_post_init__(self) -> None:
        if not self.collections:
            raise ConfigurationError("Bundles needs at least one upload-only model")
        if self.max_rows < 1 or self.max_bytes < 1024:
            raise ConfigurationError("max_rows must be ≥ 1 and max_bytes ≥ 1024")
        if not isinstance(self.service, IngestService):
            raise ConfigurationError(
                f"{self.service!r} is not an ingest service",
                hint="use HttpIngest(url) or StoreIngest(remote)",
            )

    @property
    def names(self) -> frozenset[str]:
        return frozenset(collection_name(m) for m in self.collections)


@attrs.define
class BundleTally:
    """What the bundle step did: rows accepted and refused per collection, bundles
    the service rejected (with why), bundles still waiting for an answer, and rows
    held back because a parent they name is not on the remote yet."""

    bundled: dict[str, int] = attrs.field(factory=dict)
    refused: dict[str, int] = attrs.field(factory=dict)
    rejected: list[str] = attrs.field(factory=list)
    waiting: int = 0
    held: list[RowError] = attrs.field(factory=list)


def send(ctx: SyncContext, config: Bundles) -> BundleTally:
    """Settle the bundles left from earlier syncs, then bundle and send every unsynced
    row of the upload-only collections."""
    tally = BundleTally()
    for record in ctx.local.bundles():
        if record.state == "built":  # killed before its request was recorded
            config.blobs.delete(record.key)
            ctx.local.drop_bundle(record.bundle)
        else:
            _submit(ctx, config, record, tally)
    for model in ctx.models:
        if collection_name(model) in config.names:
            _send_collection(ctx, config, model, tally)
    return tally


def _send_collection(
    ctx: SyncContext, config: Bundles, model: type[peewee.Model], tally: BundleTally
) -> None:
    """Bundle and send ``model``'s unsynced rows that no bundle carries yet and whose
    parents are on the remote, one bundle at a time, until none is left or the service
    rejects one; again from the start while a pass frees rows of a tree."""
    coll = collection_name(model)
    # a local delete of an upload-only row is this device's own business
    ctx.local.drop_pending_tombstones(coll)
    total, sent = ctx.local.count_dirty(coll), 0  # (rows in earlier bundles included)
    parents = _parents(ctx, model)
    while True:
        accepted, complete = _pass(ctx, config, model, parents, tally, sent, total)
        sent += accepted
        # a tree: rows this pass passed by may name a parent it just sent
        if not (complete and accepted and any(fk.rel_model is model for fk in parents)):
            break
    tally.held += _held(ctx, model, parents)


def _pass(
    ctx: SyncContext,
    config: Bundles,
    model: type[peewee.Model],
    parents: list[peewee.ForeignKeyField],
    tally: BundleTally,
    sent: int,
    total: int,
) -> tuple[int, bool]:
    """One pass over ``model``'s rows in id order; returns the rows accepted (or sent
    and waiting for an answer) and whether the pass ended without a rejection."""
    coll = collection_name(model)
    after, moved = "", 0
    while True:
        made = _build(ctx, config, model, parents, after)
        if made is None:
            return moved, True
        record, rows, packed = made
        after = rows[-1][0]
        with packed.body:
            ctx.local.add_bundle(record, rows)
            if not put_once(config.blobs, record.key, packed.body, record.sha256):
                raise RemoteError(f"the blob store already holds other bytes under {record.key}")
        ctx.local.set_bundle_state(record.bundle, "requested")
        record = attrs.evolve(record, state="requested")
        if not _submit(ctx, config, record, tally):
            return moved, False  # rejected: its rows wait for the next sync, not for this loop
        moved += record.count
        ctx.progress("upload", coll, sent + moved, max(total, sent + moved))


def _parents(ctx: SyncContext, model: type[peewee.Model]) -> list[peewee.ForeignKeyField]:
    """The foreign keys of ``model`` to a synced model."""
    synced = set(ctx.models)
    return [fk for fk in model._meta.refs if fk.rel_model in synced]


def _on_remote(fk: peewee.ForeignKeyField) -> str:
    """SQL true for a row of ``t`` whose key ``fk`` names no parent, or one on the remote
    (with a ``serverId``: uploaded, or its bundle accepted and the row with it)."""
    column, table = fk.column_name, collection_name(fk.rel_model)
    return (
        f'(t."{column}" IS NULL OR EXISTS (SELECT 1 FROM "{table}" p'
        f' WHERE p."{fk.rel_field.column_name}" = t."{column}" AND p."serverId" IS NOT NULL))'
    )


def _held(
    ctx: SyncContext, model: type[peewee.Model], parents: list[peewee.ForeignKeyField]
) -> list[RowError]:
    """The unsynced rows of ``model`` no bundle carries that wait for a parent, each
    naming the first parent it waits for."""
    coll = collection_name(model)
    held: dict[str, RowError] = {}
    for fk in parents:
        rows = ctx.db.execute_sql(
            f'SELECT t.id, t."{fk.column_name}" FROM "{coll}" AS t WHERE t."isDirty" = 1'
            f" AND NOT {_on_remote(fk)}"
            " AND NOT EXISTS (SELECT 1 FROM replicator_bundle_rows b"
            " WHERE b.collection = ? AND b.id = t.id)",
            (coll,),
        )
        for doc_id, parent_id in rows:
            waits = f"waits for its parent {collection_name(fk.rel_model)}/{parent_id}"
            held.setdefault(doc_id, RowError(coll, doc_id, WaitsForParent(waits)))
    return list(held.values())


def _submit(ctx: SyncContext, config: Bundles, record: BundleRecord, tally: BundleTally) -> bool:
    """Ask the service about ``record`` and act on the answer; False if it rejected it."""
    request = IngestRequest(
        bundle=record.bundle,
        key=record.key,
        sha256=record.sha256,
        size=record.size,
        count=record.count,
        collection=record.collection,
        device=ctx.me,
    )
    result = config.service.submit(request, ctx.device_record())
    if result.bundle != record.bundle:
        raise RemoteError(
            f"the ingest service answered about bundle {result.bundle[:40]!r}"
            f" when asked about {record.bundle}",
            hint="the service is misbehaving; the rows stay unsynced and are asked about again",
        )
    if result.state == "pending":
        tally.waiting += 1
        return True
    if result.state == "rejected":
        log.warning("bundle %s rejected by the service: %s", record.bundle, result.reason)
        tally.rejected.append(f"{record.collection} bundle {record.bundle}: {result.reason}")
        ctx.local.drop_bundle(record.bundle)
        return False
    accepted, refused = ctx.local.settle_bundle(record, result.refused)
    coll = record.collection
    tally.bundled[coll] = tally.bundled.get(coll, 0) + accepted
    if refused:
        tally.refused[coll] = tally.refused.get(coll, 0) + refused
    return True


def _build(
    ctx: SyncContext,
    config: Bundles,
    model: type[peewee.Model],
    parents: list[peewee.ForeignKeyField],
    after: str,
) -> tuple[BundleRecord, list[tuple[str, int]], Packed] | None:
    """The next bundle of ``model``'s unsynced rows that no bundle carries yet and whose
    ``parents`` are on the remote, with ids after ``after`` (so one pass never reads the
    rows of its earlier bundles again), with its record (state ``built``) and each
    row's id and ``syncRev``; None when there are none. The caller closes the body."""
    lines, rows = _unbundled(ctx, config, model, parents, after)
    if not rows:
        return None
    coll = collection_name(model)
    bundle = new_id()
    header = bundle_header(
        bundle=bundle,
        device=ctx.me,
        collection=coll,
        columns=remote_columns(model),
        app_version=ctx.app_version,
        count=len(rows),
    )
    packed = pack(header, lines)
    record = BundleRecord(
        bundle=bundle,
        collection=coll,
        key=f"{config.prefix}/{ctx.me}/{bundle}.ndjson.gz",
        sha256=packed.sha256,
        size=packed.size,
        count=len(rows),
        state="built",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
    )
    return record, rows, packed


def _unbundled(
    ctx: SyncContext,
    config: Bundles,
    model: type[peewee.Model],
    parents: list[peewee.ForeignKeyField],
    after: str,
) -> tuple[list[bytes], list[tuple[str, int]]]:
    """At most a bundle's worth (``max_rows``, about ``max_bytes``) of ``model``'s
    unsynced rows that no bundle carries yet and whose ``parents`` are on the remote,
    with ids after ``after``, read in one transaction: each encoded as a bundle line
    (its ``updatedOn`` moved to the store's clock), and each one's id and ``syncRev``."""
    coll = collection_name(model)
    cols = remote_columns(model)
    names = ", ".join(f'"{c}"' for c in cols)
    shift = ctx.clock_shift()
    lines: list[bytes] = []
    rows: list[tuple[str, int]] = []
    size = 0
    with ctx.db.atomic():
        cursor = ctx.db.execute_sql(
            f'SELECT {names}, "syncRev" FROM "{coll}" AS t'
            f' INDEXED BY "replicator_{coll}_dirty_ids" WHERE "isDirty" = 1 AND id > ?'
            " AND NOT EXISTS (SELECT 1 FROM replicator_bundle_rows b"
            " WHERE b.collection = ? AND b.id = t.id)"
            + "".join(f" AND {_on_remote(fk)}" for fk in parents)
            + " ORDER BY id",
            (after, coll),
        )
        for values in cursor:
            row = dict(zip(cols, values[:-1], strict=True))
            if shift is not None:
                row["updatedOn"] = shift_time(row["updatedOn"], shift)
            line = encode_json(row).encode()
            if rows and (len(rows) >= config.max_rows or size + len(line) > config.max_bytes):
                break
            lines.append(line)
            rows.append((row["id"], values[-1]))
            size += len(line) + 1
        cursor.close()
    return lines, rows
