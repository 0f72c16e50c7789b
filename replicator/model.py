"""SyncModel: the sync columns every synced table holds, and the rules about models.

Ids are client-generated UUIDs, unique across devices without coordination and
identical on every device and in every snapshot. The sync columns (``isDirty``,
``serverId``, ``syncRev``, ``createdOn``, ``updatedOn``, ``updatedBy``) are
written by change capture (``capture.py``), never by the app; the local ones
(``isDirty``, ``serverId``, ``syncRev``, ``syncVersion``) never travel.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import peewee

from .errors import SchemaError

#: columns that describe local sync state and never travel to the remote
LOCAL_COLUMNS = frozenset({"isDirty", "serverId", "syncRev", "syncVersion"})
#: sync columns every SyncModel table holds
SYNC_COLUMNS = ("isDirty", "serverId", "syncRev", "createdOn", "updatedOn", "updatedBy")

# The device clock in the text form Python's sqlite3 adapter gives a naive UTC
# datetime (datetime.isoformat(" ")): microseconds, or none when they are zero,
# so a timestamp reads the same whichever device or store wrote it.
# One strftime, read once: the fraction padded to microseconds, dropped when it is zero
# (a date holds no other dot).
NOW_SQL = "replace(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000', '.000000', '')"
T = TypeVar("T")

#: device clock offsets (seconds) smaller than this are measurement noise and not corrected
CLOCK_TOLERANCE = 2.0


def new_id() -> str:
    """A client-generated id: a random UUID, unique across devices without coordination."""
    return str(uuid.uuid4())


def utcnow() -> _dt.datetime:
    """Naive UTC now, the form peewee stores and the triggers write."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


class SyncModel(peewee.Model):
    """Base class of every synced table.

    Rows get a UUID ``id`` generated on the device, so ``Model(...).save()``
    inserts a new row the first time (peewee would otherwise issue an UPDATE
    for a model whose primary key is already set). The sync columns are
    maintained by triggers and SQL defaults; values assigned to them from
    Python are overwritten on the next write, and none is computed in Python
    (on a fresh instance they read ``None`` until the row is loaded again):
    defaults the triggers overwrite anyway cost a third of an insert.
    """

    id = peewee.CharField(primary_key=True, max_length=36, default=new_id)
    server_id = peewee.CharField(column_name="serverId", null=True, max_length=36)
    # SQL defaults too, so rows inserted by raw SQL or other programs are valid.
    # ``is_dirty`` is the seed's name; it shadows peewee's Model.is_dirty() method
    # (unsaved in-memory changes), which SyncModel instances answer via dirty_fields.
    is_dirty = peewee.BooleanField(  # type: ignore[assignment]
        column_name="isDirty", constraints=[peewee.SQL("DEFAULT 1")]
    )
    sync_rev = peewee.IntegerField(column_name="syncRev", constraints=[peewee.SQL("DEFAULT 0")])
    # the remote version this row last agreed with (None: never confirmed remotely)
    sync_version = peewee.CharField(column_name="syncVersion", null=True, max_length=64)
    created_on = peewee.DateTimeField(column_name="createdOn", null=True)
    updated_on = peewee.DateTimeField(column_name="updatedOn", null=True)
    updated_by = peewee.CharField(column_name="updatedBy", null=True, max_length=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        loaded = bool(kwargs.get("__no_default__"))
        super().__init__(*args, **kwargs)
        self._replicator_new = not loaded and "id" not in kwargs

    def save(self, force_insert: bool = False, only: Any = None) -> Any:
        if getattr(self, "_replicator_new", False):
            force_insert = True
        result = super().save(force_insert=force_insert, only=only)
        self._replicator_new = False
        return result


def shift_time(text: Any, seconds: float) -> Any:
    """A stored timestamp moved by ``seconds``, in the same text form; other values unchanged."""
    if not isinstance(text, str):
        return text
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if when.tzinfo is not None:
        return text
    return (when + _dt.timedelta(seconds=seconds)).isoformat(sep=" ")


def parents_first(
    items: Sequence[T], ident: Callable[[T], Any], parents: Callable[[T], Iterable[Any]]
) -> list[T]:
    """``items`` of a self-referencing table reordered so that an item whose parent is
    among them comes after that parent (a cycle is broken where it is met)."""
    by_id = {ident(i): i for i in items}
    out: list[T] = []
    placed: set[Any] = set()
    for item in items:
        chain: list[T] = []
        in_chain: set[Any] = set()
        node: T | None = item
        while node is not None and (key := ident(node)) not in placed and key not in in_chain:
            chain.append(node)
            in_chain.add(key)
            node = next((by_id[p] for p in parents(node) if p != key and p in by_id), None)
        for member in reversed(chain):
            placed.add(ident(member))
            out.append(member)
    return out


def collection_name(model: type[peewee.Model]) -> str:
    """The remote collection of a model: its table name."""
    return str(model._meta.table_name)


def columns(model: type[peewee.Model]) -> list[str]:
    return [f.column_name for f in model._meta.sorted_fields]


def remote_columns(model: type[peewee.Model]) -> list[str]:
    """The columns that travel: every column but the local sync state."""
    return [c for c in columns(model) if c not in LOCAL_COLUMNS]


def data_columns(model: type[peewee.Model]) -> list[str]:
    """The columns that hold the row's data: what an update must touch to change it
    (the capture triggers and the change listeners watch these)."""
    return watched(remote_columns(model))


def watched(cols: Sequence[str]) -> list[str]:
    """Of a table's remote columns, those a write must touch to change the row's data
    (all but the ones change capture stamps itself)."""
    return [c for c in cols if c not in _STAMPED] or ["id"]


def sort_models(models: Iterable[type[peewee.Model]]) -> list[type[peewee.Model]]:
    """Parents before children, from the models' foreign keys (peewee's own sort)."""
    sort = peewee.sort_models  # type: ignore[attr-defined]
    return list(sort(list(models)))


def check_models(models: Sequence[type[peewee.Model]]) -> None:
    names: set[str] = set()
    for model in models:
        if not (isinstance(model, type) and issubclass(model, SyncModel)):
            raise SchemaError(
                f"{model!r} is not a SyncModel subclass",
                hint="derive every synced model from replicator.SyncModel",
            )
        name = collection_name(model)
        if name in ("devices", "replicator_meta", "ingest_requests"):
            raise SchemaError(
                f"a synced table cannot be named {name!r}: the remote keeps"
                f" {'the Devices' if name == 'devices' else 'its own'} collection under that name",
                hint="set Meta.table_name to another name",
            )
        if name in names:
            raise SchemaError(f"two models use the table {name!r}")
        names.add(name)
        for fk in model._meta.refs:
            if fk.rel_model not in models and fk.rel_model is not model:
                raise SchemaError(
                    f"{name}.{fk.column_name} refers to {collection_name(fk.rel_model)!r},"
                    " which is not synced",
                    hint="pass the referenced model to Replicator too",
                )


#: the remote columns the triggers stamp themselves: the update triggers watch the others
#: (the local columns are never among the watched: they do not travel)
_STAMPED = ("createdOn", "updatedOn", "updatedBy")
