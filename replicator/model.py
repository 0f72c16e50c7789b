"""SyncModel: the sync columns, and change capture that sees every write path.

Change capture lives in the database, not in Python: ``install_capture``
creates three SQLite triggers per synced table. A trigger sees every write,
whether it comes from ``Model.save()``, ``Model.update().execute()``,
``insert_many``, ``delete_instance``, ``Model.delete()``, raw SQL through
``database.execute_sql``, or another program (the ``sqlite3`` shell)
writing the same file. On every local insert or update the triggers set ``isDirty``,
``updatedOn`` (UTC, the device clock), ``updatedBy`` (this installation) and
give ``syncRev`` a fresh random value (so "unchanged since read" is a plain
comparison, even across ``INSERT OR REPLACE``); every local delete leaves a
tombstone for the upload.

The engine applies remote changes with the ``replicator_control.applying``
flag raised inside its own transaction, so its writes are not captured; no
other connection can observe the raised flag, because SQLite isolates the
uncommitted transaction, and a crash rolls the flag back with the data.
The triggers assume SQLite's default ``recursive_triggers = OFF``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
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

_TRIGGER_VERSION = "v4"
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
    return _watched(remote_columns(model))


def _watched(cols: Sequence[str]) -> list[str]:
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


def _table_columns(db: peewee.Database, table: str) -> set[str]:
    return {row[1] for row in db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()}


def install_capture(db: peewee.Database, models: Sequence[type[SyncModel]]) -> None:
    """Create missing tables, add columns a newer model declares, and (re)create the
    change-capture triggers. Idempotent."""
    from playhouse.migrate import SqliteMigrator, migrate

    me = installation(db)
    for model in models:
        table = collection_name(model)
        existing = _table_columns(db, table)
        if not existing:
            with db.bind_ctx([model], bind_refs=False, bind_backrefs=False):
                model.create_table(safe=True)
            existing = _table_columns(db, table)
        missing = [f for f in model._meta.sorted_fields if f.column_name not in existing]
        for field in missing:
            if not field.null and field.default is None:
                raise SchemaError(
                    f"table {table!r} lacks the column {field.column_name!r}, which is NOT NULL"
                    " without a default, so replicator cannot add it",
                    hint="give the field a default or null=True, or add the column with"
                    " playhouse.migrate before creating the Replicator",
                )
            migrate(SqliteMigrator(db).add_column(table, field.column_name, field))
        # the dirty rows, by id: what an upload pages through and a count reads; it
        # holds only dirty rows, so its cost follows the changes
        db.execute_sql(
            f'CREATE INDEX IF NOT EXISTS "replicator_{table}_dirty_ids" ON "{table}" (id)'
            ' WHERE "isDirty" = 1'
        )
        db.execute_sql(f'DROP INDEX IF EXISTS "replicator_{table}_dirty"')
        existing_triggers = {
            name
            for (name,) in db.execute_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
            ).fetchall()
        }
        wanted = set(trigger_names(table, remote_columns(model)))
        for older in existing_triggers - wanted:
            if re.fullmatch(rf"replicator_{re.escape(table)}_\w+_v\d+(_[0-9a-f]+)?", older):
                db.execute_sql(f'DROP TRIGGER "{older}"')  # an earlier replicator's
        if not wanted <= existing_triggers:  # leave a database that has them untouched
            cols = remote_columns(model)
            for sql in _trigger_sql(table, cols, rowid=_has_rowid(db, table), me=me):
                db.execute_sql(sql)
    if me is not None:
        restamp_triggers(db, me)  # triggers made under another identity (a copied database)


def _has_rowid(db: peewee.Database, table: str) -> bool:
    row = db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    return not (row and re.search(r"WITHOUT\s+ROWID\s*;?\s*$", row[0] or "", re.I))


#: the triggers of one table: insert and update each come as a pair (see _trigger_sql),
#: and ``base`` keeps the merge base of a clean row when it is first changed
TRIGGER_KINDS = ("ins", "ins_clean", "upd", "upd_clean", "del", "base")


def trigger_names(table: str, cols: Sequence[str]) -> list[str]:
    """The triggers' names; they name the columns they watch and copy (a hash), so an app
    upgrade that changes those replaces them."""
    digest = hashlib.sha256(",".join(cols).encode()).hexdigest()[:8]
    return [f"replicator_{table}_{kind}_{_TRIGGER_VERSION}_{digest}" for kind in TRIGGER_KINDS]


#: the remote columns the triggers stamp themselves: the update triggers watch the others
#: (the local columns are never among the watched: they do not travel)
_STAMPED = ("createdOn", "updatedOn", "updatedBy")


def _json_value(ref: str) -> str:
    """SQL giving a column value as a JSON value that decodes to exactly that value:
    reals as text (``%!.20e`` round-trips every double; JSON's own rendering keeps 15
    digits), blobs as hex (JSON has no bytes)."""
    return (
        f"CASE typeof({ref}) WHEN 'real' THEN json_object('$real', printf('%!.20e', {ref}))"
        f" WHEN 'blob' THEN json_object('$hex', hex({ref})) ELSE {ref} END"
    )


def preimage_json(cols: Sequence[str], prefix: str = "") -> str:
    """SQL building the JSON object of a row's remote columns (``prefix``: ``OLD.`` in a
    trigger), in the form ``replicator_base.data`` holds."""
    pairs = ", ".join(f"'{c}', " + _json_value(prefix + '"' + c + '"') for c in cols)
    return f"json_object({pairs})"


#: how the triggers name the device that wrote a row: its installation id as a literal
#: (a lookup of ``replicator_device`` would cost every write a query), marked so that
#: :func:`restamp_triggers` finds it when the database takes a new identity
_ME_MARK = "/*installation*/"
_ME_LITERAL = re.compile(r"'((?:[^']|'')*)' /\*installation\*/")


def _me_sql(me: str | None) -> str:
    if me is None:  # no identity yet (a bare install_capture): read it at each write
        return "(SELECT installation_id FROM replicator_device WHERE singleton = 1)"
    return "'" + me.replace("'", "''") + "' " + _ME_MARK


def installation(db: peewee.Database) -> str | None:
    """The database's installation id, if it has one yet."""
    try:
        row = db.execute_sql("SELECT installation_id FROM replicator_device").fetchone()
    except peewee.OperationalError:  # no replicator tables yet
        return None
    return None if row is None else str(row[0])


def restamp_triggers(db: peewee.Database, me: str) -> int:
    """Make every change-capture trigger stamp ``me`` as the writer (after the database
    took a new identity: a restore); returns how many were recreated."""
    literal = _me_sql(me)
    done = 0
    for name, sql in db.execute_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'replicator%'"
    ).fetchall():
        if not sql or _ME_MARK not in sql:
            continue
        fresh = _ME_LITERAL.sub(lambda _m: literal, sql)
        if fresh != sql:
            db.execute_sql(f'DROP TRIGGER "{name}"')
            db.execute_sql(fresh)
            done += 1
    return done


def _trigger_sql(
    table: str, cols: Sequence[str], *, rowid: bool = True, me: str | None = None
) -> list[str]:
    """The change-capture triggers of ``table``.

    Inserts and updates each get two triggers, split on the row's ``isDirty``
    after the app's write: a row already dirty (a new row takes the column's
    ``DEFAULT 1``) is stamped without writing ``isDirty`` again, so SQLite
    leaves the partial index of dirty rows alone; that halves what capture
    costs an update. A row written clean (``isDirty`` = 0, e.g. a loaded
    instance saved again) gets ``isDirty`` = 1 too. The first change of a
    synced, clean row saves its values as they stand remotely (``base``):
    the three-way merge's common ancestor, kept only while the row is dirty.

    Update triggers watch the row's data columns only (``UPDATE OF``): the
    stamp a trigger writes (``isDirty``, ``syncRev``, ``updatedOn``,
    ``updatedBy``, ``createdOn``) fires no other trigger (with
    ``recursive_triggers`` off SQLite only keeps a trigger from firing itself),
    so a write costs one stamp, not two; a write that touches nothing but
    those columns is not a change of the row's data and is not captured.
    """
    me = _me_sql(me)
    # the row just written, found by its rowid (one seek) rather than through the id index
    row = "rowid = NEW.rowid" if rowid else "id = NEW.id"
    gate = "(SELECT applying FROM replicator_control WHERE singleton = 1) = 0"
    names = dict(zip(TRIGGER_KINDS, trigger_names(table, cols), strict=True))
    stamp = f'"syncRev" = random(), "updatedOn" = {NOW_SQL}, "updatedBy" = {me}'
    created = f'"createdOn" = COALESCE(NEW."createdOn", {NOW_SQL})'
    # the version is the engine's: a stale instance saved again cannot set it back
    keep_version = '"syncVersion" = OLD."syncVersion"'
    watched = ", ".join(f'"{c}"' for c in _watched(cols))
    out = [f'DROP TRIGGER IF EXISTS "{name}"' for name in names.values()]
    # each WHEN tests the row's own columns before the gate's lookup: SQLite stops at the
    # first false term, so of the three update triggers only the one that acts reads it
    for clean in (False, True):
        when = f'NEW."isDirty" IS NOT 1 AND {gate}' if clean else f'NEW."isDirty" = 1 AND {gate}'
        dirty = '"isDirty" = 1, ' if clean else ""
        suffix = "_clean" if clean else ""
        out += [
            f"""CREATE TRIGGER "{names["ins" + suffix]}" AFTER INSERT ON "{table}" WHEN {when}
            BEGIN
                UPDATE "{table}" SET {dirty}{created}, {stamp} WHERE {row};
                DELETE FROM replicator_tombstones
                WHERE collection = '{table}' AND id = NEW.id AND pending = 1;
            END""",
            f"""CREATE TRIGGER "{names["upd" + suffix]}" AFTER UPDATE OF {watched} ON "{table}"
            WHEN {when}
            BEGIN
                UPDATE "{table}" SET {dirty}{stamp}, {keep_version} WHERE {row};
            END""",
        ]
    out.append(
        f"""CREATE TRIGGER "{names["del"]}" AFTER DELETE ON "{table}" WHEN {gate}
        BEGIN
            INSERT INTO replicator_tombstones (collection, id, deleted_on, deleted_by, pending)
            VALUES ('{table}', OLD.id, {NOW_SQL}, {me}, 1)
            ON CONFLICT (collection, id) DO NOTHING;
        END"""
    )
    out.append(
        f"""CREATE TRIGGER "{names["base"]}" AFTER UPDATE OF {watched} ON "{table}"
        WHEN OLD."isDirty" = 0 AND OLD."syncVersion" IS NOT NULL AND {gate}
        BEGIN
            INSERT OR IGNORE INTO replicator_base (collection, id, version, data)
            VALUES ('{table}', OLD.id, OLD."syncVersion", {preimage_json(cols, "OLD.")});
        END"""
    )
    return out
