"""Adding sync to an existing peewee app: which tables can be adopted, and what becomes
of the rows they already hold (docs/guides/adopting.md)."""

from __future__ import annotations

import sqlite3
import uuid

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator, SchemaError, SyncModel


def _app_table(path, id_field: peewee.Field | None, rows: int = 3) -> None:
    """What the app had before sync: a plain peewee model and its rows."""
    db = peewee.SqliteDatabase(str(path))
    fields: dict[str, object] = {"title": peewee.TextField()}
    if id_field is not None:
        fields["id"] = id_field
    fields["Meta"] = type("Meta", (), {"database": db, "table_name": "note"})
    plain = type("PlainNote", (peewee.Model,), fields)
    db.create_tables([plain])
    for i in range(rows):
        plain.create(title=f"written before sync {i}")
    db.close()


class Note(SyncModel):
    title = peewee.TextField()

    class Meta:
        table_name = "note"


def _schema(path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def test_a_table_with_text_uuid_ids_is_adopted_and_its_rows_go_up(tmp_path):
    app = tmp_path / "app.db"
    _app_table(app, peewee.CharField(primary_key=True, default=lambda: str(uuid.uuid4())))
    remote = EmbeddedRemote(tmp_path / "remote.db")
    device = Replicator(peewee.SqliteDatabase(str(app)), [Note], remote, device_name="app")
    # the sync columns were added; every row already there waits for upload, stamped
    # now by this device (so last-writer-wins does not rank it as the oldest write)
    assert device.pending_count() == 3
    rows = device.database.execute_sql(
        'SELECT title, "isDirty", "updatedOn", "createdOn", "updatedBy" FROM note'
    ).fetchall()
    assert {r[0] for r in rows} == {f"written before sync {i}" for i in range(3)}
    assert all(r[1] == 1 and r[2] and r[3] and r[4] == device.installation_id for r in rows)
    report = device.sync()
    assert report.uploaded == {"note": 3} and report.rejected == ()
    other = Replicator(peewee.SqliteDatabase(str(tmp_path / "other.db")), [Note], remote)
    assert other.sync().downloaded == {"note": 3}
    with device.bound():  # and the app's later writes are captured as any SyncModel's
        Note.update(title="edited").where(Note.title == "written before sync 0").execute()
    assert device.sync().uploaded == {"note": 1}


def test_a_table_with_integer_ids_is_refused_and_left_as_it_was(tmp_path):
    app = tmp_path / "app.db"
    _app_table(app, None)  # peewee's default: id INTEGER PRIMARY KEY (an AutoField)
    before = _schema(app)
    with pytest.raises(SchemaError) as caught:
        Replicator(peewee.SqliteDatabase(str(app)), [Note], EmbeddedRemote(tmp_path / "r.db"))
    assert "note.id" in caught.value.message and "INTEGER" in caught.value.message
    assert "text" in caught.value.hint and "copy" in caught.value.hint
    assert _schema(app) == before  # no column added, no replicator table


def test_a_table_keyed_by_another_column_is_refused(tmp_path):
    app = tmp_path / "app.db"
    _app_table(app, peewee.CharField(primary_key=True, column_name="code", default="x"), rows=1)
    before = _schema(app)
    with pytest.raises(SchemaError, match="no column 'id'"):
        Replicator(peewee.SqliteDatabase(str(app)), [Note], EmbeddedRemote(tmp_path / "r.db"))
    assert _schema(app) == before


def test_a_missing_column_of_the_apps_own_is_named_as_the_apps(tmp_path):
    """The sync columns are replicator's to add; only the app's own fields need its help."""
    app = tmp_path / "app.db"
    _app_table(app, peewee.CharField(primary_key=True, default=lambda: str(uuid.uuid4())))

    class Wider(SyncModel):
        title = peewee.TextField()
        rating = peewee.IntegerField()  # NOT NULL, no default: no value for the old rows

        class Meta:
            table_name = "note"

    with pytest.raises(SchemaError, match="'rating'") as caught:
        Replicator(peewee.SqliteDatabase(str(app)), [Wider], EmbeddedRemote(tmp_path / "r.db"))
    assert "isDirty" not in str(caught.value) and "Wider.rating" in caught.value.hint
