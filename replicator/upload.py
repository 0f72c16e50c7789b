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

from .apply import apply_remote
from .codec import encode_json
from .context import SyncContext
from .errors import ConflictError, DocumentTooLargeError, PreconditionFailed
from .model import collection_name, remote_columns
from .report import RowError
from .stores.base import PushResult, Write

MAX_CONFLICT_ROUNDS = 5


def document_size(write: Write) -> int:
    return len(encode_json(write.data)) + len(write.collection) + len(write.id) + 16


def collect(ctx: SyncContext) -> list[tuple[Write, Any]]:
    """The writes to make, each with the row's ``syncRev`` as read (None for deletes)."""
    out: list[tuple[Write, Any]] = []
    limit = getattr(ctx.remote, "max_document_bytes", 0)
    measure = getattr(ctx.remote, "document_size", document_size)
    held: set[tuple[str, str]] = set()  # rows not uploaded this time: their new children wait
    ctx.rejected.clear()
    for model in ctx.models:
        coll = collection_name(model)
        cols = remote_columns(model)
        names = ", ".join(f'"{c}"' for c in cols)
        bases = ctx.local.base_versions(coll)
        fks = [(fk.column_name, collection_name(fk.rel_model)) for fk in model._meta.refs]
        rows = ctx.db.execute_sql(
            f'SELECT {names}, "syncRev" FROM "{coll}" WHERE "isDirty" = 1 ORDER BY id'
        ).fetchall()
        for row in rows:
            data = dict(zip(cols, row[:-1], strict=True))
            doc_id = data["id"]
            write = Write(coll, doc_id, ctx.outgoing(model, data), base_version=bases.get(doc_id))
            parent_held = next((f"{pc}/{data[c]}" for c, pc in fks if (pc, data[c]) in held), None)
            if parent_held is not None:
                held.add(write.key)
                ctx.rejected.append(
                    RowError(coll, doc_id, ValueError(f"waits for its parent {parent_held}"))
                )
                continue
            if limit:
                size = measure(write)
                if size > limit:
                    held.add(write.key)
                    ctx.rejected.append(
                        RowError(coll, doc_id, DocumentTooLargeError(coll, doc_id, size, limit))
                    )
                    continue
            out.append((write, (row[-1], data)))
    for model in reversed(ctx.models):
        coll = collection_name(model)
        for doc_id, deleted_on, deleted_by in ctx.local.pending_tombstones(coll):
            data = ctx.outgoing(model, {"updatedOn": deleted_on, "updatedBy": deleted_by or ctx.me})
            out.append((Write(coll, doc_id, data, deleted=True, unconditional=True), None))
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
                result = ctx.remote.push([w for w, _ in batch], ctx.device_record())
                _mark_synced(ctx, batch, result)
                last = result
                ctx.progress("upload", None, min(start + per_batch, total), total)
            return last
        except PreconditionFailed as exc:
            keys = exc.keys or [w.key for w, _ in batch]
            _refresh(ctx, keys)
    raise ConflictError(f"uploads met fresh remote changes {MAX_CONFLICT_ROUNDS} times in a row")


def _mark_synced(ctx: SyncContext, batch: list[tuple[Write, Any]], result: PushResult) -> None:
    conn = ctx.db.connection()
    by_coll: dict[str, list[tuple[Write, Any]]] = defaultdict(list)
    for write, rev in batch:
        by_coll[write.collection].append((write, rev))
    with ctx.local.applying():
        for coll, items in by_coll.items():
            deletes = [w.id for w, _ in items if w.deleted]
            rows = [(w, rev) for w, rev in items if not w.deleted]
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
                conn.executemany(
                    f'UPDATE "{coll}" SET "isDirty" = 0, "serverId" = id'
                    ' WHERE id = ? AND "syncRev" = ?',
                    [(w.id, rev) for w, (rev, _) in rows],
                )
                old = ctx.local.bases(coll, [w.id for w, _ in rows])
                ctx.local.set_bases(
                    coll,
                    [
                        (w.id, result.versions[w.key], {**old.get(w.id, {}), **data})
                        for w, (_, data) in rows
                    ],
                )
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
