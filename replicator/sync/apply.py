"""Applying one remote document to the local database.

Shared by the download phase and by the upload phase's conflict handling.
Callers hold an ``applying()`` transaction, so nothing here is captured as a
local change unless it is meant to be (a merged row, a cascaded delete).

Rules, in the order they are checked:

1. **Deletes win, under the foreign keys' rules.** A remote tombstone deletes
   the row locally. Its children follow their foreign key's ``on_delete``:
   ``CASCADE`` deletes them (and uploads their deletes), ``SET NULL`` /
   ``SET DEFAULT`` keep them with the key cleared (uploaded as an edit), and
   ``RESTRICT`` / ``NO ACTION`` (peewee's default) refuse the delete while a
   child still depends on the row: the row is kept and uploaded live again.
   A change to a row whose delete this device has not uploaded yet is
   ignored; a live version written after an acknowledged delete (a restore
   under ``RESTRICT``) is applied.
2. **Parents first.** A row whose parent is missing locally gets the parent
   fetched from the remote and applied first; a row whose parent is deleted
   follows the same ``on_delete`` rule.
3. A row that is **clean** locally takes the remote version.
4. A row that is **dirty** locally is a conflict, given to the strategy, unless
   the remote version is this device's own write (recognised by the values
   its unacknowledged uploads sent, never by ``updatedBy``), holds the same values,
   or differs from the base only in fields this app version does not know.

A document that cannot be applied (malformed, or a parent that never came)
raises ``RemoteDataError``; the page (``page.py``) rolls back just that
document and sets it aside, so one bad document never blocks a device.
:func:`apply_remote` returns what it did (:class:`~replicator.report.Applied`); it never
records into the sync's shared state, and the caller folds the outcome once
the document's savepoint has committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee

from ..codec import check_id
from ..errors import RemoteDataError
from ..model import collection_name, remote_columns, shift_time, utcnow
from ..report import Applied, Outcome, Resolution
from ..stores.base import RemoteDoc
from ..strategies.conflict import (
    ConflictStrategy,
    Resolver,
    resolver,
    store_clock,
    strategy_name,
)
from .context import SyncContext
from .foreign_keys import (
    RESTRICT,
    SET_NULL,
    blockers,
    cleared_value,
    delete_local,
    delete_rule,
    key_cleared,
)
from .rows import decode_doc, fetch_row, mark_engine_edit, write_row

#: how many missing ancestors one document may pull in before it is set aside
MAX_PARENT_DEPTH = 100

_TIMES = ("updatedOn", "updatedBy", "createdOn")


def apply_remote(
    ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc, *, depth: int = 0
) -> Applied:
    """Apply one remote document (and whatever it needs first: its parents, the
    children its delete must follow); return what that did."""
    out = Applied()
    _apply(ctx, model, doc, out, depth)
    return out


def _apply(
    ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc, out: Applied, depth: int
) -> None:
    coll = collection_name(model)
    if doc.problem is not None:
        raise RemoteDataError(coll, doc.id, doc.problem)
    check_id(coll, doc.id)
    if doc.deleted:
        _remote_delete(ctx, model, doc, out, depth)
        return
    tomb = ctx.local.tombstone(coll, doc.id)
    if tomb is not None:
        if tomb:  # our delete is not uploaded yet: it wins when it goes up
            return
        # Our delete was acknowledged, yet the row is live again: only a device that
        # saw the tombstone can write over it (writes are conditional on the version),
        # so this is a deliberate restore (a RESTRICT child needed the row).
        ctx.local.drop_tombstone(coll, doc.id)
    values = decode_doc(model, doc)
    cleared = _ensure_parents(ctx, model, doc, values, out, depth)
    if cleared is None:
        return
    row = fetch_row(ctx, model, doc.id)
    if row is None or not row["isDirty"]:
        write_row(ctx, model, values, exists=row is not None, dirty=False)
        out.wrote(coll)
    else:
        _resolve(ctx, model, doc, values, row, out)
    _agree(ctx, model, doc)
    if cleared:
        _upload_cleared(ctx, model, doc, values, cleared, out)


def _upload_cleared(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc: RemoteDoc,
    values: dict[str, Any],
    cleared: list[peewee.ForeignKeyField],
    out: Applied,
) -> None:
    """The row was written with keys naming deleted parents cleared: that is this
    device's change, to go up and be reported."""
    coll = collection_name(model)
    mark_engine_edit(ctx, model, doc.id, {})
    # the merge base is the document, so the cleared keys count as this device's change
    ctx.local.set_base(coll, doc.id, doc.version, doc.data)
    names = ", ".join(fk.column_name for fk in cleared)
    out.resolved(
        key_cleared(
            coll,
            doc.id,
            None,
            dict(doc.data),
            dict(values),
            [values[fk.column_name] for fk in cleared],
            f"{names} named a row deleted here",
        )
    )


def _remote_delete(
    ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc, out: Applied, depth: int
) -> None:
    """Apply a remote tombstone, unless a ``RESTRICT`` child still depends on the row."""
    coll = collection_name(model)
    blocking = blockers(ctx, model, doc.id)
    if blocking and depth <= MAX_PARENT_DEPTH:
        # the children may have been deleted or moved remotely too: apply that first
        _refresh_children(ctx, blocking, out, depth)
        blocking = blockers(ctx, model, doc.id)
    row = fetch_row(ctx, model, doc.id)
    if not blocking or row is None:
        delete_local(ctx, model, doc.id, out, pending=False, remote=doc)
        return
    # RESTRICT: the row stays, and goes up live again over the tombstone it has seen
    mark_engine_edit(ctx, model, doc.id, {})
    _agree(ctx, model, doc)
    local = {c: row[c] for c in remote_columns(model)}
    child_model, child_id = blocking[0]
    why = f"on_delete: {collection_name(child_model)}/{child_id} still refers to it"
    out.resolved(Resolution(coll, doc.id, "restored", local, dict(doc.data), None, local, why))


def _refresh_children(
    ctx: SyncContext, children: list[tuple[type[peewee.Model], str]], out: Applied, depth: int
) -> None:
    """Apply the remote's newer versions of ``children`` (a delete or a move there)."""
    by_model: dict[type[peewee.Model], list[str]] = {}
    for child_model, child_id in children:
        by_model.setdefault(child_model, []).append(child_id)
    for child_model, ids in by_model.items():
        child_coll = collection_name(child_model)
        _, versions = ctx.local.row_states(child_coll, ids)
        for child_id, child_doc in ctx.remote.get(child_coll, ids).items():
            if versions.get(child_id) != child_doc.version:
                incoming = ctx.codec.incoming(child_model, child_doc)
                _apply(ctx, child_model, incoming, out, depth + 1)


def _agree(ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc) -> None:
    """The row now stands over remote version ``doc.version``: record it. A row left dirty
    (a conflict kept or merged) keeps the document as the base of its next merge."""
    coll = collection_name(model)
    ctx.local.set_versions(coll, [(doc.id, doc.version)])
    row = ctx.db.execute_sql(f'SELECT "isDirty" FROM "{coll}" WHERE id = ?', (doc.id,)).fetchone()
    if row is not None and row[0]:
        ctx.local.set_base(coll, doc.id, doc.version, doc.data)
    else:
        ctx.local.drop_base(coll, doc.id)


def _ensure_parents(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc: RemoteDoc,
    values: dict[str, Any],
    out: Applied,
    depth: int,
) -> list[peewee.ForeignKeyField] | None:
    """Make every parent of the row present locally.

    Returns the keys whose parent is deleted under ``SET NULL`` (cleared in
    ``values``; the caller writes the row and uploads the change), or ``None``
    if the row was dropped (``CASCADE`` from a deleted parent). Raises ``RemoteDataError`` when a
    parent does not exist remotely or, under ``RESTRICT``, is deleted here:
    the document is set aside until the parent comes (back).
    """
    coll = collection_name(model)
    cleared: list[peewee.ForeignKeyField] = []
    for fk in model._meta.refs:
        parent_id = values.get(fk.column_name)
        if parent_id is None or (fk.rel_model is model and parent_id == doc.id):
            continue  # no parent, or a row that is its own parent
        if _parent_present(ctx, fk, parent_id, doc, out, depth):
            continue
        # the parent is deleted here: the key's rule decides
        rule = delete_rule(fk)
        if rule == SET_NULL:
            values[fk.column_name] = cleared_value(fk)  # written so; uploaded as our edit
            cleared.append(fk)
            continue
        if rule == RESTRICT:
            raise RemoteDataError(
                coll,
                doc.id,
                f"{fk.column_name} refers to {collection_name(fk.rel_model)}/{parent_id},"
                " which is deleted",
                hint="set aside until the device that wrote it restores its parent",
            )
        if fetch_row(ctx, model, doc.id) is None:
            out.resolved(
                Resolution(coll, doc.id, "deleted", None, dict(doc.data), None, None, "deletes-win")
            )
        delete_local(ctx, model, doc.id, out, pending=True, remote=doc)
        return None
    return cleared


def _parent_present(
    ctx: SyncContext,
    fk: peewee.ForeignKeyField,
    parent_id: Any,
    doc: RemoteDoc,
    out: Applied,
    depth: int,
) -> bool:
    """Whether the parent ``parent_id`` is live locally, fetching and applying it
    from the remote first when this device has never seen it. False: it is deleted
    here (a tombstone)."""
    parent_coll = collection_name(fk.rel_model)
    present = ctx.db.execute_sql(
        f'SELECT 1 FROM "{parent_coll}" WHERE id = ?', (parent_id,)
    ).fetchone()
    if present:
        return True
    if ctx.local.tombstone(parent_coll, parent_id) is not None:
        return False
    # The parent changed after this sync read its collection (or, for a
    # self-reference, later in the same stream): fetch it now.
    if depth > MAX_PARENT_DEPTH:
        raise RemoteDataError(
            doc.collection, doc.id, f"parent chain deeper than {MAX_PARENT_DEPTH} or cyclic"
        )
    found = ctx.remote.get(parent_coll, [parent_id]).get(parent_id)
    if found is None:
        raise RemoteDataError(
            doc.collection,
            doc.id,
            f"{fk.column_name} refers to {parent_coll}/{parent_id}, which does not exist",
            hint="it is set aside and retried at every sync until its parent arrives",
        )
    _apply(ctx, fk.rel_model, ctx.codec.incoming(fk.rel_model, found), out, depth + 1)
    return ctx.local.tombstone(parent_coll, parent_id) is None


def _resolve(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc: RemoteDoc,
    remote_vals: dict[str, Any],
    row: dict[str, Any],
    out: Applied,
) -> None:
    """A remote change to a row that is dirty here: a conflict for the strategy, unless
    both sides agree, the document is this device's own write, or nothing we know
    changed remotely since the base."""
    coll = collection_name(model)
    cols = remote_columns(model)
    local_vals = {c: row[c] for c in cols}
    base_entry = ctx.local.base(coll, doc.id)
    base_vals = None
    if base_entry is not None:
        base_vals = {c: base_entry[1].get(c) for c in cols if c in base_entry[1]}
    same_document = (
        base_vals is None
        and local_vals.get("createdOn") is not None
        and local_vals.get("createdOn") == remote_vals.get("createdOn")
        and local_vals.get("updatedOn") == remote_vals.get("updatedOn")
    )
    if same_document or _same(local_vals, remote_vals, cols):
        # Both sides hold the same values (or a row restored without serverId whose
        # timestamps match the document): nothing to resolve.
        write_row(ctx, model, remote_vals, exists=True, dirty=False)
        ctx.local.forget_sent(coll, [doc.id])
        out.agreed.append((coll, doc.id))
        return
    sent = ctx.local.sent_values(coll, doc.id)
    own = any(all(remote_vals.get(c) == v for c, v in s.items()) for s in sent)
    if base_vals is not None:
        _advance_base(base_vals, remote_vals, sent)
    if own:
        out.agreed.append((coll, doc.id))
    if own or (base_vals is not None and _same(base_vals, remote_vals, cols)):
        # Our own write, whose acknowledgement was lost (the document holds exactly
        # what we sent), or nothing we know changed: not a conflict. The row stays
        # dirty and goes up over this version.
        return
    out.resolved(_merge(ctx, model, doc, local_vals, remote_vals, base_vals))


def _advance_base(
    base_vals: dict[str, Any], remote_vals: Mapping[str, Any], sent: list[dict[str, Any]]
) -> None:
    """Where the remote still holds what this device sent (a write whose
    acknowledgement was lost, since merged over by another device), that value,
    not the older base, is what both sides last agreed on."""
    for values in sent:
        for c, v in values.items():
            if c not in _TIMES and remote_vals.get(c) == v:
                base_vals[c] = v


def _merge(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc: RemoteDoc,
    local_vals: dict[str, Any],
    remote_vals: dict[str, Any],
    base_vals: dict[str, Any] | None,
) -> Resolution:
    """Give a true conflict to the strategy, write what it decided, and report it."""
    coll = collection_name(model)
    cols = remote_columns(model)
    shift = ctx.clock_shift()
    if shift is not None:
        # a dirty row carries this device's clock: compare it in the store's time
        local_vals["updatedOn"] = shift_time(local_vals.get("updatedOn"), shift)
    with store_clock(ctx.store_now):
        result = _call_strategy(ctx.strategy, coll, local_vals, remote_vals, base_vals)
    merged = {c: result.get(c, local_vals[c]) for c in cols}
    merged["id"] = doc.id
    outcome: Outcome
    if _same(merged, remote_vals, cols):
        outcome = "remote"
        write_row(ctx, model, remote_vals, exists=True, dirty=False)
    elif _same(merged, local_vals, cols):
        outcome = "local"
    else:
        outcome = "merged"
        merged["updatedOn"] = utcnow().isoformat(sep=" ")
        merged["updatedBy"] = ctx.me
        write_row(ctx, model, merged, exists=True, dirty=True)
    name = strategy_name(ctx.strategy)
    return Resolution(coll, doc.id, outcome, local_vals, remote_vals, base_vals, merged, name)


def _same(a: Mapping[str, Any], b: Mapping[str, Any], cols: list[str]) -> bool:
    return all(a.get(c) == b.get(c) for c in cols if c not in _TIMES)


def _call_strategy(
    strategy: ConflictStrategy | Resolver,
    collection: str,
    local: dict[str, Any],
    remote: dict[str, Any],
    base: dict[str, Any] | None,
) -> Mapping[str, Any]:
    resolve = resolver(strategy)
    result = resolve(collection, dict(local), dict(remote), None if base is None else dict(base))
    if not isinstance(result, Mapping):
        raise TypeError(
            f"conflict strategy {strategy!r} returned {type(result).__name__}, not a mapping"
        )
    return result
