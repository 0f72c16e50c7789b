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
