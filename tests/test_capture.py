"""Every local write path marks rows dirty or leaves a tombstone; engine writes do not."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.models import Comment, Note


@pytest.fixture
def device(make_device):
    return make_device("a")


def dirty(device, table="note"):
    return dict(device.database.execute_sql(f'SELECT id, "isDirty" FROM "{table}"').fetchall())


def tombstones(device):
    return {
        (c, i)
        for c, i in device.database.execute_sql(
            "SELECT collection, id FROM replicator_tombstones WHERE pending = 1"
        ).fetchall()
    }


def clean_all(device):
    device.sync()
    assert all(v == 0 for v in dirty(device).values())


def test_save_insert_and_update(device):
    with device.bound():
        note = Note(title="new")
        note.save()  # a fresh UUID id must insert, not update nothing
        assert Note.select().count() == 1
        clean_all(device)
        note.title = "changed"
        note.save()
        row = Note.get_by_id(note.id)
    assert row.is_dirty and row.updated_by == device.installation_id
    assert row.updated_on is not None and row.created_on is not None


def test_update_query(device):
    with device.bound():
        note = Note.create(title="x")
        clean_all(device)
        Note.update(body="y").where(Note.id == note.id).execute()
    assert dirty(device) == {note.id: 1}


def test_insert_many(device):
    with device.bound():
        Note.insert_many([{"id": f"id-{i}", "title": str(i)} for i in range(3)]).execute()
    assert dirty(device) == {f"id-{i}": 1 for i in range(3)}
    rows = device.database.execute_sql('SELECT "updatedBy", "createdOn" FROM note').fetchall()
    assert all(by == device.installation_id and created for by, created in rows)


def test_delete_instance_and_delete_query(device):
    with device.bound():
        a = Note.create(title="a")
        b = Note.create(title="b")
        Comment.create(note=a, text="child")
        clean_all(device)
        a.delete_instance(recursive=True)
        Note.delete().where(Note.id == b.id).execute()
    assert {(c, i) for c, i in tombstones(device)} >= {("note", a.id), ("note", b.id)}
    assert any(c == "comment" for c, _ in tombstones(device))


def test_raw_sql(device):
    with device.bound():
        note = Note.create(title="x")
    clean_all(device)
    device.database.execute_sql("UPDATE note SET title = 'raw' WHERE id = ?", (note.id,))
    assert dirty(device) == {note.id: 1}
    device.database.execute_sql("INSERT INTO note (id, title, body) VALUES ('raw-id', 't', '')")
    assert dirty(device)["raw-id"] == 1
    device.database.execute_sql("DELETE FROM note WHERE id = 'raw-id'")
    assert ("note", "raw-id") in tombstones(device)


def test_another_program_on_the_same_file(device, tmp_path):
    with device.bound():
        note = Note.create(title="x")
    clean_all(device)
    device.database.close()
    script = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute(\"UPDATE note SET title = 'shell' WHERE id = ?\", (sys.argv[2],))\n"
        "c.execute(\"INSERT INTO note (id, title, body) VALUES ('from-shell', 's', '')\")\n"
        "c.commit()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.db"), note.id], check=True)
    assert dirty(device) == {note.id: 1, "from-shell": 1}
    rows = dict(device.database.execute_sql('SELECT id, "updatedBy" FROM note').fetchall())
    assert rows["from-shell"] == device.installation_id
    report = device.sync()
    assert report.uploaded == {"note": 2}


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
def test_the_sqlite3_shell(device, tmp_path):
    with device.bound():
        note = Note.create(title="x")
    clean_all(device)
    device.database.close()
    sql = (
        f"UPDATE note SET body = 'from the shell' WHERE id = '{note.id}';"
        "DELETE FROM note WHERE id = 'none';"
        "INSERT INTO note (id, title, body) VALUES ('shell-row', 't', '');"
    )
    subprocess.run(["sqlite3", str(tmp_path / "a.db"), sql], check=True)
    assert dirty(device) == {note.id: 1, "shell-row": 1}
    subprocess.run(
        ["sqlite3", str(tmp_path / "a.db"), "DELETE FROM note WHERE id = 'shell-row'"], check=True
    )
    assert ("note", "shell-row") in tombstones(device)


def test_engine_writes_are_not_captured(make_device):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        note = Note.create(title="x")
        Comment.create(note=note, text="y")
    a.sync()
    b.sync()
    assert all(v == 0 for v in dirty(b).values())
    assert all(v == 0 for v in dirty(b, "comment").values())
    assert tombstones(b) == set()
    assert b.database.execute_sql("SELECT applying FROM replicator_control").fetchone()[0] == 0


def test_delete_then_reinsert_before_upload_cancels_the_tombstone(device):
    with device.bound():
        note = Note.create(title="x")
        clean_all(device)
        note.delete_instance()
        assert ("note", note.id) in tombstones(device)
        Note.create(id=note.id, title="back")
    assert ("note", note.id) not in tombstones(device)


def test_the_sync_columns_come_from_the_database_not_from_python(device):
    """SyncModel sets no Python-side values for the columns the triggers own: an instance
    created, changed and saved again leaves them to the database, which stamps them."""
    with device.bound():
        note = Note.create(title="a")
        assert note.created_on is None and note.sync_rev is None  # never written from Python
        note.title = "b"
        note.save()
        row = Note.get_by_id(note.id)
        assert row.title == "b" and row.is_dirty
        assert row.created_on is not None and row.updated_on is not None
        assert row.updated_by == device.installation_id and row.sync_rev != 0
        first = row.sync_rev
        row.save()  # a loaded instance saved whole writes back what it read
        assert Note.get_by_id(note.id).sync_rev != first  # and still counts as a change


def test_triggers_of_an_earlier_version_are_replaced_not_doubled(device):
    """A database whose triggers an earlier replicator made gets the current ones only."""
    from replicator.capture import _trigger_sql, install_capture, trigger_names
    from replicator.model import remote_columns

    db = device.database
    for sql in _trigger_sql("note", ["id", "title"]):  # as an earlier release left them
        db.execute_sql(sql.replace("_v4", "_v1"))
    install_capture(db, [Note])
    names = {
        r[0]
        for r in db.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'note'"
        )
    }
    assert names == set(trigger_names("note", remote_columns(Note)))
    with device.bound():
        note = Note.create(title="x")
        note.delete_instance()
    (tombs,) = db.execute_sql("SELECT COUNT(*) FROM replicator_tombstones").fetchone()
    assert tombs == 1


def test_a_without_rowid_table_is_captured(make_device):
    import peewee

    from replicator import SyncModel

    class Tag(SyncModel):
        label = peewee.TextField()

        class Meta:
            table_name = "tag"
            without_rowid = True

    a, b = make_device("a", models=[Tag]), make_device("b", models=[Tag])
    with a.bound():
        tag = Tag.create(label="one")
        Tag.update(label="two").where(Tag.id == tag.id).execute()
        assert Tag.get_by_id(tag.id).is_dirty
    a.sync()
    b.sync()
    with b.bound():
        assert Tag.get_by_id(tag.id).label == "two"
    with a.bound():
        assert not Tag.get_by_id(tag.id).is_dirty


def test_a_row_inserted_as_if_clean_is_still_captured(device):
    # an app copying rows from a backup or another file brings their sync columns along;
    # a row this device never uploaded is a change whatever isDirty it claims
    with device.bound():
        Note.insert(id="copied", title="from a backup", is_dirty=False, updated_by="else").execute()
    assert dirty(device) == {"copied": 1}
    row = device.database.execute_sql(
        'SELECT "updatedBy", "createdOn" FROM note WHERE id = ?', ("copied",)
    ).fetchone()
    assert row[0] == device.installation_id and row[1] is not None


def test_the_first_change_of_a_synced_row_keeps_its_remote_values_as_merge_base(device):
    from replicator.codec import decode_json

    with device.bound():
        note = Note.create(title="as synced", body="b")
    clean_all(device)
    version = device.database.execute_sql(
        'SELECT "syncVersion" FROM note WHERE id = ?', (note.id,)
    ).fetchone()[0]
    assert version is not None

    def base():
        return device.database.execute_sql(
            "SELECT version, data FROM replicator_base WHERE collection = 'note' AND id = ?",
            (note.id,),
        ).fetchall()

    assert base() == []  # a clean row keeps no copy of itself
    with device.bound():
        Note.update(title="first edit").where(Note.id == note.id).execute()
        Note.update(title="second edit").where(Note.id == note.id).execute()
    [(kept_version, data)] = base()
    assert kept_version == version
    assert decode_json(data)["title"] == "as synced"  # the pre-image, not an edit


@pytest.mark.parametrize(
    "when",
    [
        "2026-11-23 09:30:01.000",
        "2026-11-23 09:30:01.120",
        "2026-11-23 09:30:01.001",
        "1999-12-31 23:59:59.999",
        "2026-01-01 00:00:00.000",
    ],
)
def test_the_triggers_clock_reads_as_pythons_datetime_text(when):
    """The stamp is the text sqlite3's adapter gives a naive datetime: microseconds, or none
    when they are zero, so a timestamp reads the same whichever device wrote it."""
    import datetime as dt
    import sqlite3

    from replicator.model import NOW_SQL

    sql = "SELECT " + NOW_SQL.replace("'now'", "?")
    (got,) = sqlite3.connect(":memory:").execute(sql, (when,)).fetchone()
    assert got == dt.datetime.fromisoformat(when).isoformat(" ")


def test_the_writer_id_in_the_triggers_survives_quotes_and_a_new_identity(device):
    """The triggers hold the installation id as a SQL literal: an id with quotes is
    written and rewritten whole, and every write after a restamp names the new one."""
    from replicator.capture import restamp_triggers

    db = device.database
    for me in ("it's", "o''brien'", device.installation_id):
        db.execute_sql("UPDATE replicator_device SET installation_id = ?", (me,))
        assert restamp_triggers(db, me) > 0
        assert restamp_triggers(db, me) == 0  # already stamped: nothing to rewrite
        with device.bound():
            kept, gone = Note.create(title="kept"), Note.create(title="gone")
            gone.delete_instance()
        by = db.execute_sql('SELECT "updatedBy" FROM note WHERE id = ?', (kept.id,)).fetchone()
        tomb = db.execute_sql(
            "SELECT deleted_by FROM replicator_tombstones WHERE id = ?", (gone.id,)
        )
        assert by == (me,) and tomb.fetchone() == (me,)
