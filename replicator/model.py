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
    for a model whose primary key is already set). The id must stay text
    (:func:`check_models`): devices create rows offline, and only ids drawn at
    random on each device never collide.

    The sync columns are maintained by triggers and SQL defaults; values
    assigned to them from Python are overwritten on the next write. After a
    ``save()`` the instance's ``is_dirty`` is ``True``, as the row's is (every
    write of the app is captured; it costs nothing to say so). The stamps
    (``created_on``, ``updated_on``, ``updated_by``) and ``sync_rev`` are not
    computed in Python: they read ``None`` on an instance not loaded from the
    database since (defaults the triggers overwrite anyway cost a third of an
    insert, and reading them back another statement).
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
        if result:
            # what the capture trigger just wrote into the row, told without a read; set in
            # __data__ so that peewee does not count it as an unsaved change of the instance
            self.__data__["is_dirty"] = True
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
    """Refuse models no sync could carry, before anything is written: not SyncModels,
    ids that are not text, reserved or shared table names, keys to unsynced tables."""
    names: set[str] = set()
    for model in models:
        if not (isinstance(model, type) and issubclass(model, SyncModel)):
            raise SchemaError(
                f"{model!r} is not a SyncModel subclass",
                hint="derive every synced model from replicator.SyncModel",
            )
        check_id(model)
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


def check_id(model: type[peewee.Model]) -> None:
    """Refuse a model whose primary key is not one text column named ``id``.

    Every device creates rows offline, so ids must be drawn where the row is made
    and never collide: random UUIDs, as text (the form every store and snapshot
    carries). An integer counter (``AutoField``) gives two devices the same ids,
    and the store refuses them as document names; without this check such a
    model would be accepted and every row rejected at every sync.
    """
    name = collection_name(model)
    pk = model._meta.primary_key
    if not isinstance(pk, peewee.Field) or isinstance(pk, peewee.CompositeKey):
        raise SchemaError(
            f"{name} has no single primary key",
            hint="keep SyncModel's id (a text UUID) as the primary key",
        )
    if pk.column_name != "id":
        raise SchemaError(
            f"{name}'s primary key is {pk.column_name!r}; replicator keys every row by"
            " a text column named 'id'",
            hint=f"keep SyncModel's id as the primary key and declare {pk.name} with"
            " unique=True instead",
        )
    if sql_affinity(pk) != "TEXT":
        raise SchemaError(
            f"{name}.id is a {type(pk).__name__} ({sqlite_type(pk)}); replicator needs text ids",
            hint="remove the id field and let SyncModel give each row a text UUID (ids"
            " made on each device, offline, must never collide: an integer counter"
            " would give two devices the same ids)",
        )


def sqlite_type(field: peewee.Field) -> str:
    """The column type peewee declares for ``field`` in SQLite."""
    types = {**peewee.FIELD, **peewee.SqliteDatabase.field_types}  # type: ignore[attr-defined]
    return str(types.get(field.field_type, field.field_type))


def sql_affinity(field_or_type: peewee.Field | str) -> str:
    """SQLite's type affinity of a field or declared column type (its rules, in order:
    INT, then CHAR/CLOB/TEXT, then BLOB or none, then REAL/FLOA/DOUB, else NUMERIC)."""
    decl = field_or_type if isinstance(field_or_type, str) else sqlite_type(field_or_type)
    decl = decl.upper()
    if "INT" in decl:
        return "INTEGER"
    if any(word in decl for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in decl or not decl:
        return "BLOB"
    if any(word in decl for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


#: the remote columns the triggers stamp themselves: the update triggers watch the others
#: (the local columns are never among the watched: they do not travel)
_STAMPED = ("createdOn", "updatedOn", "updatedBy")
