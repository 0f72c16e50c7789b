"""App upgrades: a synced table that gains a column takes the values the remote holds.

When a newer app version adds a column to a synced model, the rows this device
already holds were downloaded while it did not know the column. Other devices,
on the newer version, may have written real values into it remotely; if the
upgraded device kept the column's default, its next edit of any other field
would (before diff uploads) have carried the default over them.

So the collection is **downloaded again** from its start (once per upgrade that
adds columns to it): each document fills the new columns of its row where the
row still holds the default, dirty rows included, before it is applied as
usual. Until then, uploads send only columns that differ from the row's merge
base (``upload._changed``), so a value this device never saw is never written
over. A database of the earlier layout, which kept every row's last synced
document in ``replicator_base``, fills the columns from it at once as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import peewee

from ..codec import check_value, from_native, missing_value
from ..errors import RemoteDataError
from ..local import LocalState
from ..model import collection_name, remote_columns
from ..stores.base import RemoteDoc

if TYPE_CHECKING:
    from .context import SyncContext


def adopt_new_columns(
    local: LocalState, models: Sequence[type[peewee.Model]], *, native: bool
) -> dict[str, list[str]]:
    """Fill columns the models gained since the last run: from the rows' bases where an
    earlier layout kept them, and by downloading the collection again.

    Returns collection → the columns that were new. The first run on a
    database records the columns and fills nothing (there is nothing to tell
    a new column from an old one by).
    """
    added: dict[str, list[str]] = {}
    db = local.db
    for model in models:
        coll = collection_name(model)
        cols = remote_columns(model)
        known = local.known_columns(coll)
        if known is not None:
            fields = {f.column_name: f for f in model._meta.sorted_fields}
            for col in (c for c in cols if c not in known):
                added.setdefault(coll, []).append(col)
                field = fields[col]
                default = missing_value(field)
                with local.applying():
                    for doc_id, raw in local.bases_with(coll, col):
                        value = from_native(model, {col: raw})[col] if native else raw
                        try:
                            value = check_value(coll, doc_id, field, value)
                        except RemoteDataError:
                            continue  # an unusable remote value: the default stays
                        db.execute_sql(
                            f'UPDATE "{coll}" SET "{col}" = ? WHERE id = ? AND "{col}" IS ?',
                            (value, doc_id, default),
                        )
        if known is None or added.get(coll):
            local.set_known_columns(coll, cols)
        if added.get(coll):
            local.start_recovery(coll, reconcile=False, fill=added[coll])
    return added


def fill_columns(
    ctx: SyncContext, model: type[peewee.Model], docs: Sequence[RemoteDoc], columns: list[str]
) -> None:
    """Fill ``columns`` (added by an app upgrade) of the rows of ``docs`` that still hold
    the default, from the documents. The caller holds an ``applying()`` transaction."""
    fields = {f.column_name: f for f in model._meta.sorted_fields}
    wanted = [c for c in columns if c in fields]
    if not wanted:
        return
    coll = collection_name(model)
    for doc in docs:
        if doc.deleted or doc.problem is not None:
            continue
        for col in wanted:
            if col not in doc.data:
                continue
            field = fields[col]
            try:
                value = check_value(coll, doc.id, field, doc.data[col])
            except RemoteDataError:
                continue  # an unusable remote value: the default stays
            ctx.db.execute_sql(
                f'UPDATE "{coll}" SET "{col}" = ? WHERE id = ? AND "{col}" IS ?',
                (value, doc.id, missing_value(field)),
            )
