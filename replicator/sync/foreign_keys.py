"""What a foreign key's ``on_delete`` means across devices.

A delete that arrives from another device (or that the engine makes itself)
treats each child the way the key says it is treated locally:

- ``CASCADE``: the children are deleted too, each with a pending tombstone
  (cleared when its own remote tombstone arrives), so the remote never keeps
  an orphan;
- ``SET NULL`` / ``SET DEFAULT``: the children stay with the key cleared, and
  the cleared key goes up as this device's edit, reported as a resolution
  (never silently);
- ``RESTRICT`` / ``NO ACTION`` (peewee's default): the delete is refused while
  a child still depends on the row; :func:`blockers` names those children, and
  callers check it before :func:`delete_local`.

Every function records what it did in the :class:`~replicator.report.Applied` it is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import peewee

from ..codec import to_sqlite
from ..model import collection_name, remote_columns
from ..report import Applied, Outcome, Resolution
from ..stores.base import RemoteDoc
from .context import SyncContext
from .rows import fetch_row, mark_engine_edit

CASCADE, SET_NULL, RESTRICT = "CASCADE", "SET NULL", "RESTRICT"


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


def cleared_value(fk: peewee.ForeignKeyField) -> Any:
    """The value ``SET NULL`` / ``SET DEFAULT`` leave in the key column."""
    if _on_delete(fk) == "SET DEFAULT" and fk.default is not None:
        default = fk.default() if callable(fk.default) else fk.default
        if isinstance(default, peewee.Model):
            default = getattr(default, "id", None)
        return to_sqlite(default)
    return None


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


def blockers(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc_id: str,
    seen: set[tuple[str, str]] | None = None,
) -> list[tuple[type[peewee.Model], str]]:
    """Rows that forbid deleting ``doc_id`` (``RESTRICT`` children, through cascades)."""
    seen = set() if seen is None else seen
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
                out += blockers(ctx, child_model, child_id, seen)
    return out


def delete_local(
    ctx: SyncContext,
    model: type[peewee.Model],
    doc_id: str,
    out: Applied,
    *,
    pending: bool,
    remote: RemoteDoc | None = None,
    _seen: set[tuple[str, str]] | None = None,
) -> None:
    """Delete a row, applying each child foreign key's rule; record tombstones.

    ``pending`` says whether this row's delete must still be uploaded. Children
    removed by a cascade always get a pending tombstone. Callers check
    :func:`blockers` first: ``RESTRICT`` children are not touched here.
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
                delete_local(ctx, child_model, child_id, out, pending=True, _seen=seen)
        elif rule == SET_NULL:
            for child_id in ids:
                clear_key(ctx, child_model, fk, child_id, out, f"{coll}/{doc_id} was deleted")
    row = fetch_row(ctx, model, doc_id)
    if row is not None:
        if row["isDirty"]:
            local = {c: row[c] for c in remote_columns(model)}
            theirs = None if remote is None else dict(remote.data)
            out.resolved(
                Resolution(coll, doc_id, "deleted", local, theirs, None, None, "deletes-win")
            )
        ctx.db.execute_sql(f'DELETE FROM "{coll}" WHERE id = ?', (doc_id,))
        out.removed(coll)
    ctx.local.add_tombstone(coll, doc_id, pending=pending, by=ctx.me)
    ctx.local.drop_base(coll, doc_id)


def clear_key(
    ctx: SyncContext,
    model: type[peewee.Model],
    fk: peewee.ForeignKeyField,
    doc_id: str,
    out: Applied,
    why: str,
) -> None:
    """``SET NULL``/``SET DEFAULT`` in replication: clear the key, upload the edit, report it."""
    row = fetch_row(ctx, model, doc_id)
    if row is None:
        return
    before = {c: row[c] for c in remote_columns(model)}
    value = cleared_value(fk)
    mark_engine_edit(ctx, model, doc_id, {fk.column_name: value})
    after = {**before, fk.column_name: value}
    out.resolved(key_cleared(collection_name(model), doc_id, before, None, after, [value], why))


def key_cleared(
    coll: str,
    doc_id: str,
    local: Mapping[str, Any] | None,
    remote: Mapping[str, Any] | None,
    result: Mapping[str, Any],
    cleared: list[Any],
    why: str,
) -> Resolution:
    """The report of keys cleared under ``SET NULL`` / ``SET DEFAULT``."""
    outcome: Outcome = "set-null" if all(v is None for v in cleared) else "set-default"
    return Resolution(coll, doc_id, outcome, local, remote, None, result, f"on_delete: {why}")
