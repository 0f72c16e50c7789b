"""App upgrades: a synced table that gains a column takes the values the remote holds.

When a newer app version adds a column to a synced model, the rows this device
already holds were downloaded while it did not know the column. Other devices,
on the newer version, may have written real values into it remotely; if the
upgraded device kept the column's default, its next edit of any other field
would (before diff uploads) have carried the default over them. Every row keeps
the remote document it was last synced at in ``replicator_base``, fields this
app did not know included, so an upgrade is a migration without the network:
each row whose new column still holds the default takes the value of its base.
Uploads then send only columns that differ from the base (``upload._changed``),
so a value this device never saw is never written over.
"""

from __future__ import annotations

from collections.abc import Sequence

import peewee

from .codec import check_value, from_native, missing_value
from .errors import RemoteDataError
from .local import LocalState
from .model import collection_name, remote_columns


def adopt_new_columns(
    local: LocalState, models: Sequence[type[peewee.Model]], *, native: bool
) -> dict[str, list[str]]:
    """Fill columns the models gained since the last run from the rows' bases.

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
    return added
