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
raises ``RemoteDataError``; :func:`apply_page` rolls back just that document
and sets it aside, so one bad document never blocks a device.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import peewee

from ..codec import INT64, check_id, check_value, missing_value, plain_type, to_sqlite
from ..errors import RemoteDataError
from ..model import (
    LOCAL_COLUMNS,
    NOW_SQL,
    collection_name,
    parents_first,
    remote_columns,
    shift_time,
    utcnow,
)
from ..report import Outcome, Resolution, RowError
from ..sql import select_in
from ..stores.base import RemoteDoc
from ..strategies.conflict import (
    ConflictStrategy,
    Resolver,
    resolver,
    store_clock,
    strategy_name,
)
from .context import SyncContext

CASCADE, SET_NULL, RESTRICT = "CASCADE", "SET NULL", "RESTRICT"
#: how many missing ancestors one document may pull in before it is set aside
MAX_PARENT_DEPTH = 100


def _on_delete(fk: peewee.ForeignKeyField) -> str:
    return (fk.on_delete or "").upper().strip()


def delete_rule(fk: peewee.ForeignKeyField) -> str:
    """How replication treats children of a deleted row: the key's ``on_delete``."""
    rule = _on_delete(fk)
    if rule == CASCADE:
        return CASCADE
    if rule in ("SET NULL", "SET DEFAULT"):
        return SET_NULL
    return RESTRICT


def _cleared_value(fk: peewee.ForeignKeyField) -> Any:
    """The value ``SET NULL`` / ``SET DEFAULT`` leave in the key column."""
    if _on_delete(fk) == "SET DEFAULT" and fk.default is not None:
        default = fk.default() if callable(fk.default) else fk.default
        if isinstance(default, peewee.Model):
            default = getattr(default, "id", None)
        return to_sqlite(default)
    return None


def fetch_row(ctx: SyncContext, model: type[peewee.Model], doc_id: str) -> dict[str, Any] | None:
    table = collection_name(model)
    cursor = ctx.db.execute_sql(f'SELECT * FROM "{table}" WHERE id = ?', (doc_id,))
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def _data_fields(model: type[peewee.Model]) -> list[tuple[str, peewee.Field, type | None]]:
    """(column, field, the type a value needs no check in) of the model's remote columns
    but ``id`` (kept on the model class: decoding runs for every downloaded document)."""
    plan: list[tuple[str, peewee.Field, type | None]] | None = model.__dict__.get(
        "_replicator_data_fields"
    )
    if plan is None:
        plan = [
            (f.column_name, f, plain_type(f))
            for f in model._meta.sorted_fields
            if f.column_name not in LOCAL_COLUMNS and f.column_name != "id"
        ]
        model._replicator_data_fields = plan  # type: ignore[attr-defined]
    return plan


def decode_doc(model: type[peewee.Model], doc: RemoteDoc) -> dict[str, Any]:
    """The doc's values for this model's remote columns, checked and defaulted."""
    coll, doc_id, data = doc.collection, doc.id, doc.data
    if doc.problem is not None:
        raise RemoteDataError(coll, doc_id, doc.problem)
    check_id(coll, doc_id)
    out: dict[str, Any] = {"id": doc_id}
    for col, field, plain in _data_fields(model):
        if col not in data:
            # written by an app version that did not have this column yet
            out[col] = check_value(coll, doc_id, field, missing_value(field))
            continue
        value = data[col]
        kind = type(value)
        # codec.fits_plainly, written out: a call per value costs a 100k-row download a
        # quarter of its time (measured: 2.25x the raw copy against 1.75x)
        if (
            kind is plain
            and (kind is not str or value.isascii())
            and (kind is not int or INT64[0] <= value <= INT64[1])
            and (kind is not float or value == value)
        ):
            out[col] = value
        else:
            out[col] = check_value(coll, doc_id, field, value)
    return out


def _write_row(
    ctx: SyncContext,
    model: type[peewee.Model],
    values: Mapping[str, Any],
    *,
    exists: bool,
    dirty: bool,
) -> None:
    table = collection_name(model)
    vals = dict(values)
    vals["isDirty"] = int(dirty)
    if dirty:
        vals["syncRev"] = random.getrandbits(62)
    else:
        vals["serverId"] = vals["id"]
    if exists:
        cols = [c for c in vals if c != "id"]
        sets = ", ".join(f'"{c}" = ?' for c in cols)
        ctx.db.execute_sql(
            f'UPDATE "{table}" SET {sets} WHERE id = ?', (*[vals[c] for c in cols], vals["id"])
        )
    else:
        vals.setdefault("syncRev", 0)
        cols = list(vals)
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join("?" * len(cols))
        ctx.db.execute_sql(
            f'INSERT INTO "{table}" ({names}) VALUES ({marks})', tuple(vals[c] for c in cols)
        )


def _children(
    ctx: SyncContext, model: type[peewee.Model], doc_id: str
) -> list[tuple[type[peewee.Model], peewee.ForeignKeyField, list[str]]]:
    """Per foreign key pointing at ``model``: the local rows that reference ``doc_id``."""
    out = []
    for child_model, fk in ctx.children[model]:
        ids = [
            r[0]
            for r in ctx.db.execute_sql(
                f'SELECT id FROM "{collection_name(child_model)}" WHERE "{fk.column_name}" = ?',
                (doc_id,),
            ).fetchall()
            if (child_model, r[0]) != (model, doc_id)
        ]
        if ids:
            out.append((child_model, fk, ids))
    return out


def _blockers(
    ctx: SyncContext, model: type[peewee.Model], doc_id: str, seen: set[tuple[str, str]]
) -> list[tuple[type[peewee.Model], str]]:
    """Rows that forbid deleting ``doc_id`` (``RESTRICT`` children, through cascades)."""
    key = (collection_name(model), doc_id)
    if key in seen:
        return []
    seen.add(key)
    out: list[tuple[type[peewee.Model], str]] = []
    for child_model, fk, ids in _children(ctx, model, doc_id):
        rule = delete_rule(fk)
        if rule == RESTRICT:
            out += [(child_model, i) for i in ids]
        elif rule == CASCADE:
            for child_id in ids:
                out += _blockers(ctx, child_model, child_id, seen)
    return out


def delete_local(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc_id: str,
    *,
    pending: bool,
    remote: RemoteDoc | None = None,
    _seen: set[tuple[str, str]] | None = None,
) -> None:
    """Delete a row, applying each child foreign key's rule; record tombstones.

    ``pending`` says whether this row's delete must still be uploaded. Children
    removed by a cascade always get a pending tombstone, cleared when their
    own remote tombstone arrives, so the remote never keeps an orphan.
    Callers check :func:`_blockers` first: ``RESTRICT`` children are not
    touched here.
    """
    coll = collection_name(model)
    seen = set() if _seen is None else _seen
    if (coll, doc_id) in seen:  # a cycle (two devices re-parented a tree into a loop)
        return
    seen.add((coll, doc_id))
    for child_model, fk, ids in _children(ctx, model, doc_id):
        rule = delete_rule(fk)
        if rule == CASCADE:
            for child_id in ids:
                delete_local(ctx, child_model, child_id, pending=True, _seen=seen)
        elif rule == SET_NULL:
            for child_id in ids:
                _clear_key(ctx, child_model, fk, child_id, f"{coll}/{doc_id} was deleted")
    row = fetch_row(ctx, model, doc_id)
    if row is not None:
        if row["isDirty"]:
            ctx.resolved(
                Resolution(
                    coll,
                    doc_id,
                    "deleted",
                    {c: row[c] for c in remote_columns(model)},
                    None if remote is None else dict(remote.data),
                    None,
                    None,
                    "deletes-win",
                )
            )
        ctx.db.execute_sql(f'DELETE FROM "{coll}" WHERE id = ?', (doc_id,))
        ctx.tally.bump(ctx.tally.deleted, coll)
    ctx.local.add_tombstone(coll, doc_id, pending=pending, by=ctx.me)
    ctx.local.drop_base(coll, doc_id)


def _clear_key(
    ctx: SyncContext, model: type[peewee.Model], fk: peewee.ForeignKeyField, doc_id: str, why: str
) -> None:
    """``SET NULL``/``SET DEFAULT`` in replication: clear the key, upload the edit, report it."""
    row = fetch_row(ctx, model, doc_id)
    if row is None:
        return
    before = {c: row[c] for c in remote_columns(model)}
    value = _cleared_value(fk)
    _mark_engine_edit(ctx, model, doc_id, {fk.column_name: value})
    after = {**before, fk.column_name: value}
    _key_cleared(ctx, collection_name(model), doc_id, before, None, after, [value], why)


def _key_cleared(
    ctx: SyncContext,
    coll: str,
    doc_id: str,
    local: Mapping[str, Any] | None,
    remote: Mapping[str, Any] | None,
    result: Mapping[str, Any],
    cleared: list[Any],
    why: str,
) -> None:
    """Report keys cleared under ``SET NULL`` / ``SET DEFAULT`` (never silently)."""
    outcome: Outcome = "set-null" if all(v is None for v in cleared) else "set-default"
    ctx.resolved(
        Resolution(coll, doc_id, outcome, local, remote, None, result, f"on_delete: {why}")
    )


def _mark_engine_edit(
    ctx: SyncContext, model: type[peewee.Model], doc_id: str, values: Mapping[str, Any]
) -> None:
    """Write ``values`` as a change of this device's, to be uploaded (the engine decided it)."""
    ctx.local.keep_base(collection_name(model), remote_columns(model), [doc_id])
    sets = "".join(f', "{c}" = ?' for c in values)
    ctx.db.execute_sql(
        f'UPDATE "{collection_name(model)}" SET "isDirty" = 1, "syncRev" = ?,'
        f' "updatedOn" = {NOW_SQL}, "updatedBy" = ?{sets} WHERE id = ?',
        (random.getrandbits(62), ctx.me, *values.values(), doc_id),
    )


def _remote_delete(ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc, depth: int) -> None:
    """Apply a remote tombstone, unless a ``RESTRICT`` child still depends on the row."""
    coll = collection_name(model)
    blockers = _blockers(ctx, model, doc.id, set())
    if blockers and depth <= MAX_PARENT_DEPTH:
        # the children may have been deleted or moved remotely too: apply that first
        by_model: dict[type[peewee.Model], list[str]] = {}
        for child_model, child_id in blockers:
            by_model.setdefault(child_model, []).append(child_id)
        for child_model, ids in by_model.items():
            child_coll = collection_name(child_model)
            _, versions = ctx.local.row_states(child_coll, ids)
            for child_id, child_doc in ctx.remote.get(child_coll, ids).items():
                if versions.get(child_id) != child_doc.version:
                    apply_remote(
                        ctx,
                        child_model,
                        ctx.codec.incoming(child_model, child_doc),
                        depth=depth + 1,
                    )
        blockers = _blockers(ctx, model, doc.id, set())
    row = fetch_row(ctx, model, doc.id)
    if not blockers or row is None:
        delete_local(ctx, model, doc.id, pending=False, remote=doc)
        return
    # RESTRICT: the row stays, and goes up live again over the tombstone it has seen
    _mark_engine_edit(ctx, model, doc.id, {})
    _agree(ctx, model, doc)
    local = {c: row[c] for c in remote_columns(model)}
    child_model, child_id = blockers[0]
    ctx.resolved(
        Resolution(
            coll,
            doc.id,
            "restored",
            local,
            dict(doc.data),
            None,
            local,
            f"on_delete: {collection_name(child_model)}/{child_id} still refers to it",
        )
    )


def apply_remote(
    ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc, *, depth: int = 0
) -> None:
    coll = collection_name(model)
    if doc.problem is not None:
        raise RemoteDataError(coll, doc.id, doc.problem)
    check_id(coll, doc.id)
    if doc.deleted:
        _remote_delete(ctx, model, doc, depth)
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
    cleared = _ensure_parents(ctx, model, doc, values, depth)
    if cleared is None:
        return
    row = fetch_row(ctx, model, doc.id)
    if row is None:
        _write_row(ctx, model, values, exists=False, dirty=False)
        ctx.tally.bump(ctx.tally.downloaded, coll)
    elif not row["isDirty"]:
        _write_row(ctx, model, values, exists=True, dirty=False)
        ctx.tally.bump(ctx.tally.downloaded, coll)
    else:
        _resolve(ctx, model, doc, values, row)
    _agree(ctx, model, doc)
    if cleared:
        _mark_engine_edit(ctx, model, doc.id, {})
        # the row was written with the keys already cleared: its merge base is the
        # document, so the cleared keys count as this device's change and go up
        ctx.local.set_base(coll, doc.id, doc.version, doc.data)
        names = ", ".join(fk.column_name for fk in cleared)
        _key_cleared(
            ctx,
            coll,
            doc.id,
            None,
            dict(doc.data),
            dict(values),
            [values[fk.column_name] for fk in cleared],
            f"{names} named a row deleted here",
        )


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
    ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc, values: dict[str, Any], depth: int
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
        if parent_id is None:
            continue
        parent = fk.rel_model
        parent_coll = collection_name(parent)
        if parent is model and parent_id == doc.id:
            continue  # a row that is its own parent
        present = ctx.db.execute_sql(
            f'SELECT 1 FROM "{parent_coll}" WHERE id = ?', (parent_id,)
        ).fetchone()
        if present:
            continue
        if ctx.local.tombstone(parent_coll, parent_id) is None:
            # The parent changed after this sync read its collection (or, for a
            # self-reference, later in the same stream): fetch it now.
            if depth > MAX_PARENT_DEPTH:
                raise RemoteDataError(
                    coll, doc.id, f"parent chain deeper than {MAX_PARENT_DEPTH} or cyclic"
                )
            found = ctx.remote.get(parent_coll, [parent_id]).get(parent_id)
            if found is None:
                raise RemoteDataError(
                    coll,
                    doc.id,
                    f"{fk.column_name} refers to {parent_coll}/{parent_id}, which does not exist",
                    hint="it is set aside and retried at every sync until its parent arrives",
                )
            apply_remote(ctx, parent, ctx.codec.incoming(parent, found), depth=depth + 1)
            if ctx.local.tombstone(parent_coll, parent_id) is None:
                continue
        # the parent is deleted here: the key's rule decides
        rule = delete_rule(fk)
        if rule == SET_NULL:
            values[fk.column_name] = _cleared_value(fk)  # written so; uploaded as our edit
            cleared.append(fk)
            continue
        if rule == RESTRICT:
            raise RemoteDataError(
                coll,
                doc.id,
                f"{fk.column_name} refers to {parent_coll}/{parent_id}, which is deleted",
                hint="set aside until the device that wrote it restores its parent",
            )
        if fetch_row(ctx, model, doc.id) is None:
            ctx.resolved(
                Resolution(coll, doc.id, "deleted", None, dict(doc.data), None, None, "deletes-win")
            )
        delete_local(ctx, model, doc.id, pending=True, remote=doc)
        return None
    return cleared


def _resolve(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc: RemoteDoc,
    remote_vals: dict[str, Any],
    row: dict[str, Any],
) -> None:
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
        # Both sides hold the same values (or seed 002's fallback: a row restored
        # without serverId whose timestamps match the document): nothing to resolve.
        _write_row(ctx, model, remote_vals, exists=True, dirty=False)
        ctx.local.forget_sent(coll, [doc.id])
        return
    sent = ctx.local.sent_values(coll, doc.id)
    own = any(all(remote_vals.get(c) == v for c, v in s.items()) for s in sent)
    if base_vals is not None:
        # Where the remote still holds what this device sent (a write whose
        # acknowledgement was lost, since merged over by another device), that value,
        # not the older base, is what both sides last agreed on.
        for values in sent:
            for c, v in values.items():
                if c not in _TIMES and remote_vals.get(c) == v:
                    base_vals[c] = v
    if own or (base_vals is not None and _same(base_vals, remote_vals, cols)):
        # Our own write, whose acknowledgement was lost (the document holds exactly
        # what we sent), or nothing we know changed: not a conflict. The row stays
        # dirty and goes up over this version.
        return
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
        _write_row(ctx, model, remote_vals, exists=True, dirty=False)
    elif _same(merged, local_vals, cols):
        outcome = "local"
    else:
        outcome = "merged"
        merged["updatedOn"] = utcnow().isoformat(sep=" ")
        merged["updatedBy"] = ctx.me
        _write_row(ctx, model, merged, exists=True, dirty=True)
    ctx.resolved(
        Resolution(
            coll,
            doc.id,
            outcome,
            local_vals,
            remote_vals,
            base_vals,
            merged,
            strategy_name(ctx.strategy),
        )
    )


_TIMES = ("updatedOn", "updatedBy", "createdOn")


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


def apply_page(ctx: SyncContext, model: type[peewee.Model], docs: list[RemoteDoc]) -> None:
    """Apply a page of remote documents: plain inserts and updates in bulk, the rest one by one.

    The bulk path covers what most pages hold: live documents for rows that are
    clean or absent locally, not known deleted, whose parents are present. Any
    other document (a tombstone, a conflict, a missing parent) goes through
    :func:`apply_remote`, after the bulk work before it has been written, so
    the page is applied in cursor order either way. A document that raises
    ``RemoteDataError`` is rolled back alone and set aside (see :func:`settle`).
    """
    coll = collection_name(model)
    fks = list(model._meta.refs)
    cols = [c for c in remote_columns(model) if c != "id"]
    docs = _self_parents_first(model, docs)
    pending: list[tuple[RemoteDoc, dict[str, Any], bool]] = []
    start = 0
    while start < len(docs):
        chunk = docs[start:]
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
        slow_at = None
        for i, doc in enumerate(chunk):
            if versions.get(doc.id) == doc.version or (doc.deleted and tombs.get(doc.id) is False):
                continue  # already applied (our own upload, or a catch-up re-read)
            if doc.deleted or doc.id in tombs or dirty.get(doc.id):
                slow_at = i
                break
            try:
                values = decode_doc(model, doc)
            except RemoteDataError:
                slow_at = i
                break
            if any(
                values.get(fk.column_name) is not None
                and values[fk.column_name] not in parents[fk]
                and not (fk.rel_model is model and values[fk.column_name] == doc.id)
                for fk in fks
            ):
                slow_at = i
                break
            pending.append((doc, values, doc.id in dirty))
        _flush(ctx, coll, cols, pending)
        ctx.local.unpark(coll, [d.id for d, _, _ in pending])
        pending.clear()
        if slow_at is None:
            return
        _apply_or_set_aside(ctx, model, chunk[slow_at])
        start += slow_at + 1


def _self_parents_first(model: type[peewee.Model], docs: list[RemoteDoc]) -> list[RemoteDoc]:
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


def _apply_or_set_aside(ctx: SyncContext, model: type[peewee.Model], doc: RemoteDoc) -> None:
    coll = collection_name(model)
    mark = len(ctx.tally.conflicts)
    try:
        with ctx.db.atomic():  # a savepoint: a failure undoes this document alone
            apply_remote(ctx, model, doc)
    except RemoteDataError as exc:
        del ctx.tally.conflicts[mark:]
        if exc.doc_id == doc.id:  # an id that is no row id cannot be kept either
            ctx.local.park(coll, doc.id, exc.reason)
        ctx.tally.set_aside.append(RowError(coll, exc.doc_id, exc))
    else:
        ctx.local.unpark(coll, [doc.id])


def settle(ctx: SyncContext) -> None:
    """Retry the documents set aside by earlier syncs, parents first, at their current version."""
    parked = ctx.local.parked()
    just_now = {(e.collection, e.id) for e in ctx.tally.set_aside}
    for model in ctx.models:
        coll = collection_name(model)
        ids = sorted(i for i in parked.get(coll, {}) if (coll, i) not in just_now)
        if not ids:
            continue
        docs = ctx.remote.get(coll, ids)
        with ctx.local.applying():
            ctx.local.unpark(coll, [i for i in ids if i not in docs])  # gone remotely
            found = [ctx.codec.incoming(model, docs[i]) for i in ids if i in docs]
            for doc in _self_parents_first(model, found):
                _apply_or_set_aside(ctx, model, doc)
        ctx.changed("download")


def _existing(ctx: SyncContext, table: str, ids: list[str]) -> set[str]:
    """The ids of ``ids`` that exist in ``table``."""
    rows = select_in(ctx.db.execute_sql, f'SELECT id FROM "{table}" WHERE id IN ({{}})', ids)
    return {r[0] for r in rows}


def _flush(
    ctx: SyncContext,
    coll: str,
    cols: list[str],
    pending: list[tuple[RemoteDoc, dict[str, Any], bool]],
) -> None:
    if not pending:
        return
    conn = ctx.db.connection()
    inserts = [p for p in pending if not p[2]]
    updates = [p for p in pending if p[2]]
    # clean or new rows only (the caller's bulk path): they keep no base, just the version
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
    ctx.tally.bump(ctx.tally.downloaded, coll, len(pending))
