"""Devices on different app versions share data without losing the newer fields."""

from __future__ import annotations

import peewee

from replicator import SyncModel


class NoteV1(SyncModel):
    title = peewee.TextField()

    class Meta:
        table_name = "note"


class NoteV2(SyncModel):
    title = peewee.TextField()
    color = peewee.TextField(default="yellow")

    class Meta:
        table_name = "note"


def test_unknown_fields_survive_an_older_device(make_device, remote):
    new = make_device("new", models=[NoteV2])
    old = make_device("old", models=[NoteV1])
    with new.bound():
        note = NoteV2.create(title="t", color="red")
    new.sync()
    old.sync()
    with old.bound():
        NoteV1.update(title="edited on v1").where(NoteV1.id == note.id).execute()
    old.sync()
    doc = remote.all_docs("note")[note.id]
    assert doc.data["title"] == "edited on v1" and doc.data["color"] == "red"
    new.sync()
    with new.bound():
        row = NoteV2.get_by_id(note.id)
        assert (row.title, row.color) == ("edited on v1", "red")


def test_missing_field_from_an_older_device_takes_the_default(make_device):
    old = make_device("old", models=[NoteV1])
    new = make_device("new", models=[NoteV2])
    with old.bound():
        note = NoteV1.create(title="from v1")
    old.sync()
    new.sync()
    with new.bound():
        assert NoteV2.get_by_id(note.id).color == "yellow"


def test_an_upgraded_device_takes_the_new_column_values_and_never_uploads_the_default(
    make_device, remote, tmp_path
):
    """A v1 device holds rows a v2 device wrote with a value in a new column; after the
    upgrade (the column added) an edit of another field must not reset that value."""
    new = make_device("new", models=[NoteV2])
    old = make_device("old", models=[NoteV1])
    with new.bound():
        note = NoteV2.create(title="t", color="red")
    new.sync()
    old.sync()
    old.database.close()
    # the app is upgraded: the same database file, now with the v2 model
    upgraded = make_device("old", models=[NoteV2])
    with upgraded.bound():  # edited before the first sync after the upgrade
        NoteV2.update(title="edited after the upgrade").where(NoteV2.id == note.id).execute()
    report = upgraded.sync()  # downloads the collection again to fill the new column
    assert not report.conflicts and not report.recovered
    with upgraded.bound():
        assert NoteV2.get_by_id(note.id).color == "red"  # what the remote holds
    doc = remote.all_docs("note")[note.id]
    assert (doc.data["title"], doc.data["color"]) == ("edited after the upgrade", "red")
    new.sync()
    with new.bound():
        assert NoteV2.get_by_id(note.id).color == "red"


def test_an_edit_never_writes_a_default_over_a_remote_value_it_has_not_seen(make_device, remote):
    """Even without the migration, an update sends only what changed since its base."""
    old = make_device("old", models=[NoteV1])
    with old.bound():
        note = NoteV1.create(title="t")
    old.sync()
    new = make_device("new", models=[NoteV2])
    new.sync()
    with new.bound():
        NoteV2.update(color="blue").where(NoteV2.id == note.id).execute()
    new.sync()
    with old.bound():
        NoteV1.update(title="v1 edit").where(NoteV1.id == note.id).execute()
    old.sync()  # old downloads v2's change first, then uploads only the title
    doc = remote.all_docs("note")[note.id]
    assert (doc.data["title"], doc.data["color"]) == ("v1 edit", "blue")
