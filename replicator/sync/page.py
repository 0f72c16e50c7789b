"""Applying a page of remote documents, and retrying the documents set aside.

Most of a page is plain: live documents for rows that are clean or absent
locally, not known deleted, whose parents are present. Those are written in
bulk (``executemany``). Any other document (a tombstone, a conflict, a missing
parent, a malformed value) goes through :func:`~.apply.apply_remote` alone,
after the bulk work before it has been written, so the page is applied in
cursor order either way.

A document that raises ``RemoteDataError`` is rolled back alone (a savepoint)
and set aside: parked locally with its reason and retried at every sync
(:func:`settle`), so one bad document never blocks a device. What a page did
is returned as one :class:`~replicator.report.Applied`; the download phase folds it into
its tally after the page's transaction commits.
"""

from __future__ import annotations

from typing import Any

import peewee

from ..errors import RemoteDataError
from ..model import collection_name, parents_first, remote_columns
from ..report import Applied, RowError
from ..sql import select_in
from ..stores.base import RemoteDoc
from .apply import apply_remote
from .context import SyncContext
from .retention import gone_remotely
from .rows import decode_doc

#: a document the bulk path writes: the document, its decoded values, whether the row exists
_Plain = tuple[RemoteDoc, dict[str, Any], bool]


def apply_page(ctx: SyncContext, model: type[peewee.Model], docs: list[RemoteDoc]) -> Applied:
    """Apply a page of remote documents in cursor order: plain ones in bulk, the rest one
    by one. The caller holds the page's transaction."""
    coll = collection_name(model)
    cols = [c for c in remote_columns(model) if c != "id"]
    docs = self_parents_first(model, docs)
    out = Applied()
    start = 0
    while start < len(docs):
        chunk = docs[start:]
        plain, slow_at = _plain_prefix(ctx, model, chunk)
        _flush(ctx, coll, cols, plain, out)
        ctx.local.unpark(coll, [d.id for d, _, _ in plain])
        if slow_at is None:
            break
        # a row whose write the rules refused stays as the app wrote it (``denied.py``)
        if not ctx.local.has_denied(coll, chunk[slow_at].id):
            out.add(apply_or_set_aside(ctx, model, chunk[slow_at]))
        start += slow_at + 1
    return out


def _plain_prefix(
    ctx: SyncContext, model: type[peewee.Model], chunk: list[RemoteDoc]
) -> tuple[list[_Plain], int | None]:
    """The documents at the start of ``chunk`` the bulk path can write, and the index
    of the first one it cannot (None: it can write them all)."""
    coll = collection_name(model)
    fks = list(model._meta.refs)
    ids = [d.id for d in chunk]
    tombs = ctx.local.tombstones_for(coll, ids)
    dirty, versions = ctx.local.row_states(coll, ids)
    parents = {
        fk: _existing(
            ctx,
            collection_name(fk.rel_model),
            [str(d.data.get(fk.column_name)) for d in chunk if d.data.get(fk.column_name)],
        )
        for fk in fks
    }
    plain: list[_Plain] = []
    for i, doc in enumerate(chunk):
        if versions.get(doc.id) == doc.version or (doc.deleted and tombs.get(doc.id) is False):
            continue  # already applied (our own upload, or a catch-up re-read)
        if doc.deleted or doc.id in tombs or dirty.get(doc.id):
            return plain, i
        try:
            values = decode_doc(model, doc)
        except RemoteDataError:
            return plain, i
        if any(
            values.get(fk.column_name) is not None
            and values[fk.column_name] not in parents[fk]
            and not (fk.rel_model is model and values[fk.column_name] == doc.id)
            for fk in fks
        ):
            return plain, i
        plain.append((doc, values, doc.id in dirty))
    return plain, None


def self_parents_first(model: type[peewee.Model], docs: list[RemoteDoc]) -> list[RemoteDoc]:
    """A page of a self-referencing collection, reordered so a parent precedes its children.

    One commit's documents share a change time and come back in name order, so
    a tree written in one batch would otherwise arrive children first. The
    cursor moves once per page, so the order inside a page is free.
    """
    keys = [fk.column_name for fk in model._meta.refs if fk.rel_model is model]
    if not keys:
        return docs
    return parents_first(
        docs,
        lambda d: d.id,
        lambda d: [p for p in (d.data.get(k) for k in keys) if isinstance(p, str)],
    )


def apply_or_set_aside(ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc) -> Applied:
    """Apply one document in a savepoint; if it cannot be applied, undo it alone and set
    it aside with its reason. Returns what stayed."""
    coll = collection_name(model)
    try:
        with ctx.db.atomic():  # a savepoint: a failure undoes this document alone
            applied = apply_remote(ctx, model, doc)
    except RemoteDataError as exc:
        if exc.doc_id == doc.id:  # an id that is no row id cannot be kept either
            ctx.local.park(coll, doc.id, exc.reason)
        return Applied(set_aside=[RowError(coll, exc.doc_id, exc)])
    ctx.local.unpark(coll, [doc.id])
    return applied


def settle(ctx: SyncContext, just_set_aside: set[tuple[str, str]]) -> Applied:
    """Retry the documents set aside by earlier syncs (not ``just_set_aside``, by this
    one), parents first, at their current version. Each collection commits on its own
    and its listeners are told; returns what the retries did."""
    parked = ctx.local.parked()
    out = Applied()
    for model in ctx.models:
        coll = collection_name(model)
        ids = sorted(i for i in parked.get(coll, {}) if (coll, i) not in just_set_aside)
        if not ids:
            continue
        docs = ctx.remote.get(coll, ids)
        with ctx.local.applying():
            gone = [i for i in ids if i not in docs]
            ctx.local.unpark(coll, gone)
            # gone remotely: deleted, and the tombstone purged since it was set aside
            states, _ = ctx.local.row_states(coll, gone)
            synced = _synced(ctx, coll, gone)
            for doc_id in gone:
                if doc_id in synced:
                    gone_remotely(ctx, model, doc_id, states.get(doc_id, False), out)
            found = [ctx.codec.incoming(model, docs[i]) for i in ids if i in docs]
            for doc in self_parents_first(model, found):
                out.add(apply_or_set_aside(ctx, model, doc))
        ctx.changed("download")
    return out


def _synced(ctx: SyncContext, table: str, ids: list[str]) -> set[str]:
    """The ids of ``ids`` whose rows the remote once held (``serverId`` set)."""
    sql = f'SELECT id FROM "{table}" WHERE "serverId" IS NOT NULL AND id IN ({{}})'
    return {r[0] for r in select_in(ctx.db.execute_sql, sql, ids)}


def _existing(ctx: SyncContext, table: str, ids: list[str]) -> set[str]:
    """The ids of ``ids`` that exist in ``table``."""
    rows = select_in(ctx.db.execute_sql, f'SELECT id FROM "{table}" WHERE id IN ({{}})', ids)
    return {r[0] for r in rows}


def _flush(ctx: SyncContext, coll: str, cols: list[str], plain: list[_Plain], out: Applied) -> None:
    """Write the bulk path's documents: clean or new rows only, which keep no merge
    base, just the version they stand over."""
    if not plain:
        return
    conn = ctx.db.connection()
    inserts = [p for p in plain if not p[2]]
    updates = [p for p in plain if p[2]]
    if inserts:
        local = ["isDirty", "serverId", "syncRev", "syncVersion"]
        names = ", ".join(f'"{c}"' for c in ["id", *cols, *local])
        marks = ", ".join("?" * (len(cols) + 5))
        conn.executemany(
            f'INSERT INTO "{coll}" ({names}) VALUES ({marks})',
            [(d.id, *[v[c] for c in cols], 0, d.id, 0, d.version) for d, v, _ in inserts],
        )
    if updates:
        sets = ", ".join(f'"{c}" = ?' for c in [*cols, "isDirty", "serverId", "syncVersion"])
        conn.executemany(
            f'UPDATE "{coll}" SET {sets} WHERE id = ?',
            [(*[v[c] for c in cols], 0, d.id, d.version, d.id) for d, v, _ in updates],
        )
    out.wrote(coll, len(plain))
