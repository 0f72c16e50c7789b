"""Upload phase (seed 002 §3): send this device's dirty rows and deletes.

Rows go parents before children, deletes children before parents, in atomic
batches the size of the store's limit (the device's own record rides in the
same batch). A row is a create (precondition: the document does not exist)
when this device never saw it remotely, else an update conditional on the
version it last saw, so a remote change that slipped in since the download is
detected: the engine fetches it, resolves the conflict and uploads again.
After the commit a row is marked clean, and gets its ``serverId``, only if its
``syncRev`` is unchanged, i.e. nobody wrote it while the upload was in flight.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import attrs
import peewee

from .apply import apply_remote
from .codec import encode_json, missing_value, values_digest
from .context import SyncContext
from .errors import (
    ConflictError,
    DocumentTooLargeError,
    PreconditionFailed,
    UnsupportedValueError,
)
from .model import CLOCK_TOLERANCE, collection_name, remote_columns, shift_time
from .report import RowError
from .stores.base import PushResult, Write

MAX_CONFLICT_ROUNDS = 5


def document_size(write: Write) -> int:
    return len(encode_json(write.data)) + len(write.collection) + len(write.id) + 16


@attrs.frozen
class Outgoing:
    """One row write as collected: what is sent, and what marking it synced needs."""

    write: Write
    rev: Any  # the row's syncRev as read; None for a delete
    row: dict[str, Any]  # every remote column, SQLite form, as it will stand remotely
    digest: str  # of exactly the values sent (see LocalState.record_sent)


def _changed(
    model: type[peewee.Model], row: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    """The columns of ``row`` an update must send: those that differ from the base.

    A column the base lacks (the remote document never had it, or this device
    never saw its value) is sent only if the row holds something other than
    the value such a document decodes to, so a device never writes over a
    remote value it has not seen.
    """
    fields = {f.column_name: f for f in model._meta.sorted_fields}
    out = {}
    for col, value in row.items():
        if col in ("id", "updatedOn", "updatedBy"):
            out[col] = value
        elif col in base:
            if base[col] != value:
                out[col] = value
        elif col in fields and value != missing_value(fields[col]):
            out[col] = value
    return out


def _parents_first(rows: list[tuple[Any, ...]], id_at: int, parent_at: list[int]) -> list[Any]:
    """Rows of a self-referencing table ordered so that a row's dirty parent precedes it."""
    by_id = {r[id_at]: r for r in rows}
    out: list[Any] = []
    placed: set[Any] = set()
    for row in rows:
        chain = []
        node: Any = row
        while node is not None and node[id_at] not in placed and node not in chain:
            chain.append(node)
            node = next(
                (by_id[node[i]] for i in parent_at if node[i] in by_id and node[i] != node[id_at]),
                None,
            )
        for item in reversed(chain):
            placed.add(item[id_at])
            out.append(item)
    return out


def collect(ctx: SyncContext) -> list[Outgoing]:
    """The writes to make, read in one transaction so that they form a consistent whole.

    An app may commit a parent and its child at any moment; reading every
    collection inside one read transaction means the upload sends both or
    neither, so the remote never holds a child whose parent it lacks.
    """
    with ctx.db.atomic():
        return _collect(ctx)


def _collect(ctx: SyncContext) -> list[Outgoing]:
    out: list[Outgoing] = []
    limit = getattr(ctx.remote, "max_document_bytes", 0)
    measure = getattr(ctx.remote, "document_size", document_size)
    held: set[tuple[str, str]] = set()  # rows not uploaded this time: their new children wait
    offset = ctx.local.clock_offset
    shift = offset if offset is not None and abs(offset) >= CLOCK_TOLERANCE else None
    ctx.rejected.clear()
    for model in ctx.models:
        coll = collection_name(model)
        cols = remote_columns(model)
        names = ", ".join(f'"{c}"' for c in cols)
        bases = ctx.local.dirty_bases(coll)
        fks = [(fk.column_name, collection_name(fk.rel_model)) for fk in model._meta.refs]
        rows = ctx.db.execute_sql(
            f'SELECT {names}, "syncRev" FROM "{coll}" WHERE "isDirty" = 1 ORDER BY id'
        ).fetchall()
        self_refs = [cols.index(c) for c, pc in fks if pc == coll]
        if self_refs:
            rows = _parents_first(rows, cols.index("id"), self_refs)
        for row in rows:
            data = dict(zip(cols, row[:-1], strict=True))
            doc_id = data["id"]
            if shift is not None and data.get("updatedOn"):
                data["updatedOn"] = shift_time(data["updatedOn"], shift)
            base = bases.get(doc_id)
            sent = data if base is None else _changed(model, data, base[1])
            write = Write(coll, doc_id, sent, base_version=None if base is None else base[0])
            parent_held = next((f"{pc}/{data[c]}" for c, pc in fks if (pc, data[c]) in held), None)
            if parent_held is not None:
                held.add(write.key)
                ctx.rejected.append(
                    RowError(coll, doc_id, ValueError(f"waits for its parent {parent_held}"))
                )
                continue
            try:
                full = ctx.outgoing(model, data)
            except UnsupportedValueError as exc:  # a value the store cannot hold
                held.add(write.key)
                error = UnsupportedValueError(exc.column, exc.reason, coll, doc_id)
                ctx.rejected.append(RowError(coll, doc_id, error))
                continue
            if limit:
                size = measure(attrs.evolve(write, data=full))
                if size > limit:
                    held.add(write.key)
                    ctx.rejected.append(
                        RowError(coll, doc_id, DocumentTooLargeError(coll, doc_id, size, limit))
                    )
                    continue
            write = attrs.evolve(write, data={k: v for k, v in full.items() if k in sent})
            out.append(Outgoing(write, row[-1], data, values_digest(sent)))
    for model in reversed(ctx.models):
        coll = collection_name(model)
        for doc_id, deleted_on, deleted_by in ctx.local.pending_tombstones(coll):
            if shift is not None and deleted_on:
                deleted_on = shift_time(deleted_on, shift)
            data = {"updatedOn": deleted_on, "updatedBy": deleted_by or ctx.me}
            write = Write(coll, doc_id, ctx.outgoing(model, data), deleted=True, unconditional=True)
            out.append(Outgoing(write, None, data, ""))
    return out


def upload(ctx: SyncContext) -> PushResult | None:
    """Run the phase; return the last commit's result, or None if nothing was dirty."""
    last: PushResult | None = None
    per_batch = ctx.remote.max_batch_writes - 1
    for _ in range(MAX_CONFLICT_ROUNDS):
        writes = collect(ctx)
        if not writes:
            return last
        total = len(writes)
        try:
            for start in range(0, total, per_batch):
                batch = writes[start : start + per_batch]
                with ctx.db.atomic():
                    ctx.local.record_sent(
                        [(o.write.collection, o.write.id, o.digest) for o in batch if o.digest]
                    )
                before = ctx.clock()
                result = ctx.remote.push([o.write for o in batch], ctx.device_record())
                ctx.measured_clock(before, result.server_time)
                _mark_synced(ctx, batch, result)
                last = result
                ctx.progress("upload", None, min(start + per_batch, total), total)
            return last
        except PreconditionFailed as exc:
            keys = exc.keys or [o.write.key for o in batch]
            _refresh(ctx, keys)
    raise ConflictError(f"uploads met fresh remote changes {MAX_CONFLICT_ROUNDS} times in a row")


def _mark_synced(ctx: SyncContext, batch: list[Outgoing], result: PushResult) -> None:
    """Mark each pushed row clean, only if it is unchanged since it was read."""
    conn = ctx.db.connection()
    by_coll: dict[str, list[Outgoing]] = defaultdict(list)
    for item in batch:
        by_coll[item.write.collection].append(item)
    with ctx.local.applying():
        for coll, items in by_coll.items():
            deletes = [o.write.id for o in items if o.write.deleted]
            rows = [o for o in items if not o.write.deleted]
            if deletes:
                conn.executemany(
                    "UPDATE replicator_tombstones SET pending = 0 WHERE collection = ? AND id = ?",
                    [(coll, i) for i in deletes],
                )
                conn.executemany(
                    "DELETE FROM replicator_base WHERE collection = ? AND id = ?",
                    [(coll, i) for i in deletes],
                )
                ctx.counts.bump(ctx.counts.uploaded_deletes, coll, len(deletes))
            if rows:
                # updatedOn as it stands remotely (corrected for this device's clock)
                conn.executemany(
                    f'UPDATE "{coll}" SET "isDirty" = 0, "serverId" = id, "updatedOn" = ?'
                    ' WHERE id = ? AND "syncRev" = ?',
                    [(o.row.get("updatedOn"), o.write.id, o.rev) for o in rows],
                )
                ids = [o.write.id for o in rows]
                old = ctx.local.bases(coll, ids)
                ctx.local.set_bases(
                    coll,
                    [
                        (
                            o.write.id,
                            result.versions[o.write.key],
                            {**old.get(o.write.id, {}), **o.row},
                        )
                        for o in rows
                    ],
                )
                ctx.local.forget_sent(coll, ids)
                ctx.counts.bump(ctx.counts.uploaded, coll, len(rows))
        ctx.local.set_device(last_upload=result.position, registered=1)


def _refresh(ctx: SyncContext, keys: list[tuple[str, str]]) -> None:
    """Fetch the remote versions that beat our preconditions and resolve them locally."""
    by_coll: dict[str, list[str]] = defaultdict(list)
    for coll, doc_id in keys:
        by_coll[coll].append(doc_id)
    for model in ctx.models:
        coll = collection_name(model)
        ids = by_coll.get(coll)
        if not ids:
            continue
        docs = ctx.remote.get(coll, ids)
        with ctx.local.applying():
            for doc_id in ids:
                doc = docs.get(doc_id)
                if doc is None:
                    # our base names a document the remote no longer has: create it afresh
                    ctx.local.drop_base(coll, doc_id)
                else:
                    apply_remote(ctx, model, ctx.incoming(model, doc))
