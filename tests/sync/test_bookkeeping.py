"""Bookkeeping no bigger than it needs to be: a synced database keeps, per row, only the
remote version it agrees with (``syncVersion``); a row's merge base is saved when it is
first changed and dropped when it is synced again. Merges are unchanged."""

from __future__ import annotations

import datetime as dt
import time

import peewee

from replicator import FieldMerge, SyncModel
from tests.helpers import assert_converged
from tests.models import Note


def _bases(device) -> dict[str, str]:
    rows = device.database.execute_sql("SELECT id, data FROM replicator_base").fetchall()
    return dict(rows)


def _versions(device, table="note") -> dict[str, str]:
    return dict(device.database.execute_sql(f'SELECT id, "syncVersion" FROM "{table}"').fetchall())


def test_a_synced_database_keeps_only_versions(make_device, remote):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        notes = [Note.create(title=f"n{i}", body="x" * 50) for i in range(30)]
    a.sync()
    b.sync()
    docs = remote.all_docs("note")
    for device in (a, b):
        assert _bases(device) == {}
        assert _versions(device) == {i: d.version for i, d in docs.items()}
    with a.bound():  # the first change of a synced row saves it as the remote holds it
        Note.update(title="changed").where(Note.id == notes[3].id).execute()
        Note.update(title="changed again").where(Note.id == notes[3].id).execute()
    from replicator.codec import decode_json

    saved = decode_json(_bases(a)[notes[3].id])
    assert saved["title"] == "n3" and saved["body"] == "x" * 50 and saved["id"] == notes[3].id
    a.sync()
    assert _bases(a) == {}
    assert _versions(a)[notes[3].id] == remote.all_docs("note")[notes[3].id].version
    assert_converged([a, b])


class Reading(SyncModel):
    label = peewee.TextField()
    value = peewee.FloatField()
    raw = peewee.BlobField(null=True)
    big = peewee.BigIntegerField(default=0)
    when = peewee.DateTimeField(null=True)
    flag = peewee.BooleanField(default=False)

    class Meta:
        table_name = "reading"


def test_the_merge_base_holds_every_value_exactly(make_device, remote):
    """A base that rounded a float or mangled bytes would make an untouched column look
    edited here, and the later writer would undo the other device's edit of it."""
    merge = FieldMerge()
    a = make_device("a", models=[Reading], conflict_strategy=merge)
    b = make_device("b", models=[Reading], conflict_strategy=merge)
    start = {
        "label": "start",
        "value": 0.1 + 0.2,
        "raw": bytes(range(256)),
        "big": 2**62 + 1,
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, 678901),
        "flag": True,
    }
    with a.bound():
        row = Reading.create(**start)
    a.sync()
    b.sync()
    with a.bound():  # a edits the value and the bytes
        Reading.update(value=1 / 3, raw=b"\x00new").where(Reading.id == row.id).execute()
    time.sleep(0.01)
    with b.bound():  # b edits the label, later: the later writer for columns both changed
        Reading.update(label="from b").where(Reading.id == row.id).execute()
    a.sync()
    report = b.sync()
    assert [c.outcome for c in report.conflicts] == ["merged"]
    assert_converged([a, b], models=[Reading])
    with b.bound():
        got = Reading.get_by_id(row.id)
    assert (got.label, got.value, got.raw) == ("from b", 1 / 3, b"\x00new")
    assert (got.big, got.when, got.flag) == (start["big"], start["when"], True)


def test_a_database_of_the_earlier_layout_moves_to_this_one(make_device, remote):
    """Before, every synced row kept its whole last synced document in replicator_base."""
    from replicator.codec import encode_json
    from replicator.model import remote_columns

    a, b = make_device("a"), make_device("b")
    with a.bound():
        notes = [Note.create(title=f"n{i}") for i in range(5)]
    a.sync()
    b.sync()
    with b.bound():  # offline edit: dirty, with its base
        Note.update(title="b edit").where(Note.id == notes[0].id).execute()
    docs = remote.all_docs("note")
    db = b.database
    cols = remote_columns(Note)
    names = ", ".join(f'"{c}"' for c in cols)
    with b.local.applying():  # as the earlier layout left it
        for row in db.execute_sql(f"SELECT {names} FROM note").fetchall():
            data = dict(zip(cols, row, strict=True))
            if data["id"] == notes[0].id:
                data["title"] = "n0"  # the dirty row's base: as synced
            db.execute_sql(
                "INSERT OR REPLACE INTO replicator_base VALUES ('note', ?, ?, ?)",
                (data["id"], docs[data["id"]].version, encode_json(data)),
            )
        db.execute_sql('UPDATE note SET "syncVersion" = NULL')
    db.close()
    reopened = make_device("b", conflict_strategy=FieldMerge())
    assert set(_bases(reopened)) == {notes[0].id}  # only the dirty row keeps a base
    assert _versions(reopened) == {i: d.version for i, d in docs.items()}
    with a.bound():
        Note.update(body="a edit").where(Note.id == notes[0].id).execute()
    a.sync()
    reopened.sync()
    assert_converged([a, reopened])
    with a.bound():
        merged = Note.get_by_id(notes[0].id)
    assert (merged.title, merged.body) == ("b edit", "a edit")  # a three-way merge still


def test_a_stale_instance_saved_again_does_not_set_the_version_back(make_device, remote):
    a = make_device("a", conflict_strategy=FieldMerge())
    with a.bound():
        note = Note.create(title="t")
    a.sync()
    with a.bound():
        stale = Note.get_by_id(note.id)  # loaded at the first version
        Note.update(body="b").where(Note.id == note.id).execute()
    a.sync()
    version = _versions(a)[note.id]
    with a.bound():
        stale.title = "t2"
        stale.save()  # writes every field it loaded, syncVersion included
    assert _versions(a)[note.id] == version
    report = a.sync()
    assert report.conflicts == () and report.uploaded == {"note": 1}
