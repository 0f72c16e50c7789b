"""Change capture that sees every write path: SQLite triggers on each synced table.

Change capture lives in the database, not in Python: ``install_capture``
creates the triggers of each synced table. A trigger sees every write,
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

import hashlib
import re
from collections.abc import Sequence

import peewee

from .errors import SchemaError
from .model import NOW_SQL, SyncModel, collection_name, remote_columns, sql_affinity, watched

_TRIGGER_VERSION = "v4"


def _table_columns(db: peewee.Database, table: str) -> set[str]:
    return {row[1] for row in db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()}


def install_capture(db: peewee.Database, models: Sequence[type[SyncModel]]) -> None:
    """Create missing tables, add columns a newer model declares, and (re)create the
    change-capture triggers. Idempotent."""
    me = installation(db)
    for model in models:
        table = collection_name(model)
        existing = _table_columns(db, table)
        if not existing:
            with db.bind_ctx([model], bind_refs=False, bind_backrefs=False):
                model.create_table(safe=True)
            existing = _table_columns(db, table)
        _add_columns(db, model, existing, me)
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


def check_tables(db: peewee.Database, models: Sequence[type[peewee.Model]]) -> None:
    """Refuse, before anything is written, a table the app already has that replicator
    cannot adopt: its rows must be keyed by a text column ``id`` (the models' own ids are
    checked by ``model.check_id``). Ids are how every device and the store name a row,
    and rows made offline on several devices need ids that never collide."""
    for model in models:
        table = collection_name(model)
        info = db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()
        if not info:
            continue  # replicator creates it
        keys = [row[1] for row in info if row[5]]
        decl = next((str(row[2]) for row in info if row[1] == "id"), None)
        if decl is None or keys != ["id"]:
            raise SchemaError(
                f"the existing table {table!r} has no column 'id' as its primary key"
                f" (its key: {', '.join(keys) or 'none'}); replicator keys every row by a text id",
                hint=f"copy its rows into a new table {model.__name__} creates (each row given"
                " a text UUID, str(uuid.uuid4())), then sync that table",
            )
        if decl and sql_affinity(decl) != "TEXT":
            raise SchemaError(
                f"the existing table {table!r} keys its rows by {table}.id {decl}: integer ids,"
                " which devices creating rows offline would give out twice; replicator needs"
                " text ids",
                hint="it cannot be adopted in place: copy its rows into a new table with a"
                " text UUID id (str(uuid.uuid4()) per row), point the foreign keys that refer"
                " to them at the new ids, then sync that table",
            )


def _add_columns(
    db: peewee.Database, model: type[SyncModel], existing: set[str], me: str | None
) -> None:
    """Add the columns ``model`` declares that its table lacks: the sync columns of a
    table the app had before it synced (its rows then wait for upload, stamped as
    written now by this device), or the columns a newer app version added."""
    from playhouse.migrate import SqliteMigrator, migrate

    table = collection_name(model)
    missing = [f for f in model._meta.sorted_fields if f.column_name not in existing]
    for field in missing:
        # the sync columns' SQL defaults (isDirty = 1) fill the rows the table holds
        sql_default = any(
            "DEFAULT" in str(getattr(c, "sql", "")).upper() for c in field.constraints or ()
        )
        if not field.null and field.default is None and not sql_default:
            raise SchemaError(
                f"table {table!r} lacks the column {field.column_name!r}, which is NOT NULL"
                " without a default, so replicator cannot add it",
                hint=f"give {model.__name__}.{field.name} a default or null=True, or add the"
                " column with playhouse.migrate before creating the Replicator",
            )
        migrate(
            SqliteMigrator(db).add_column(
                table, field.column_name, field, allow_not_null=sql_default
            )
        )
    if "updatedOn" in {f.column_name for f in missing}:
        # rows written before the app synced: stamped now, by this device, so that
        # last-writer-wins does not rank them below every other write
        db.execute_sql(
            f'UPDATE "{table}" SET "createdOn" = {NOW_SQL}, "updatedOn" = {NOW_SQL}'
            + (', "updatedBy" = ?' if me is not None else ""),
            (me,) if me is not None else (),
        )


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
    names = dict(zip(TRIGGER_KINDS, trigger_names(table, cols), strict=True))
    out = [f'DROP TRIGGER IF EXISTS "{name}"' for name in names.values()]
    out += _stamp_triggers(table, cols, names, rowid=rowid, me=_me_sql(me))
    watching = ", ".join(f'"{c}"' for c in watched(cols))
    out.append(
        f"""CREATE TRIGGER "{names["del"]}" AFTER DELETE ON "{table}" WHEN {_GATE}
        BEGIN
            INSERT INTO replicator_tombstones (collection, id, deleted_on, deleted_by, pending)
            VALUES ('{table}', OLD.id, {NOW_SQL}, {_me_sql(me)}, 1)
            ON CONFLICT (collection, id) DO NOTHING;
        END"""
    )
    out.append(
        f"""CREATE TRIGGER "{names["base"]}" AFTER UPDATE OF {watching} ON "{table}"
        WHEN OLD."isDirty" = 0 AND OLD."syncVersion" IS NOT NULL AND {_GATE}
        BEGIN
            INSERT OR IGNORE INTO replicator_base (collection, id, version, data)
            VALUES ('{table}', OLD.id, OLD."syncVersion", {preimage_json(cols, "OLD.")});
        END"""
    )
    return out


#: whether the app (not the engine applying remote changes) is writing
_GATE = "(SELECT applying FROM replicator_control WHERE singleton = 1) = 0"


def _stamp_triggers(
    table: str, cols: Sequence[str], names: dict[str, str], *, rowid: bool, me: str
) -> list[str]:
    """The insert and update triggers, one pair each (row written dirty / written clean),
    that stamp the row as this device's change."""
    # the row just written, found by its rowid (one seek) rather than through the id index
    row = "rowid = NEW.rowid" if rowid else "id = NEW.id"
    stamp = f'"syncRev" = random(), "updatedOn" = {NOW_SQL}, "updatedBy" = {me}'
    created = f'"createdOn" = COALESCE(NEW."createdOn", {NOW_SQL})'
    # the version is the engine's: a stale instance saved again cannot set it back
    keep_version = '"syncVersion" = OLD."syncVersion"'
    watching = ", ".join(f'"{c}"' for c in watched(cols))
    out = []
    # each WHEN tests the row's own columns before the gate's lookup: SQLite stops at the
    # first false term, so of the three update triggers only the one that acts reads it
    for clean in (False, True):
        when = f'NEW."isDirty" IS NOT 1 AND {_GATE}' if clean else f'NEW."isDirty" = 1 AND {_GATE}'
        dirty = '"isDirty" = 1, ' if clean else ""
        suffix = "_clean" if clean else ""
        out += [
            f"""CREATE TRIGGER "{names["ins" + suffix]}" AFTER INSERT ON "{table}" WHEN {when}
            BEGIN
                UPDATE "{table}" SET {dirty}{created}, {stamp} WHERE {row};
                DELETE FROM replicator_tombstones
                WHERE collection = '{table}' AND id = NEW.id AND pending = 1;
            END""",
            f"""CREATE TRIGGER "{names["upd" + suffix]}" AFTER UPDATE OF {watching} ON "{table}"
            WHEN {when}
            BEGIN
                UPDATE "{table}" SET {dirty}{stamp}, {keep_version} WHERE {row};
            END""",
        ]
    return out
