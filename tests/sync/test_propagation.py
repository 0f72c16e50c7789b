"""Creates, updates and deletes made on one device reach every other device."""

from __future__ import annotations

from tests.helpers import snapshot_rows
from tests.models import Comment, Note


def test_create_update_delete_propagate_across_three_devices(make_device, remote):
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    with a.bound():
        n1 = Note.create(title="one")
        n2 = Note.create(title="two")
        Comment.create(note=n1, text="c1")
        Comment.create(note=n2, text="c2")
    a.sync()
    b.sync()
    c.sync()
    assert snapshot_rows(b) == snapshot_rows(a) == snapshot_rows(c)
    assert len(snapshot_rows(c)["comment"]) == 2

    with b.bound():
        Note.update(title="ONE").where(Note.id == n1.id).execute()
    with c.bound():
        Note.get_by_id(n2.id).delete_instance(recursive=True)
    b.sync()
    c.sync()
    a.sync()
    b.sync()
    for device in (a, b, c):
        with device.bound():
            assert [n.title for n in Note.select()] == ["ONE"]
            assert [x.text for x in Comment.select()] == ["c1"]
            assert Note.get_by_id(n1.id).updated_by == b.installation_id
        assert sum(device.dirty_counts().values()) == 0
    docs = remote.all_docs("note")
    assert docs[n2.id].deleted and not docs[n1.id].deleted
    assert docs[n1.id].data["title"] == "ONE"


def test_downloaded_rows_are_clean_and_confirmed(make_device):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        note = Note.create(title="x")
        assert Note.get_by_id(note.id).is_dirty
        assert Note.get_by_id(note.id).server_id is None
    a.sync()
    b.sync()
    for device in (a, b):
        with device.bound():
            row = Note.get_by_id(note.id)
            assert not row.is_dirty
            assert row.server_id == note.id
            assert row.updated_by == a.installation_id
    report = b.sync()
    assert report.idle


def test_remote_delete_cascades_to_children_created_elsewhere(make_device, remote):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        note = Note.create(title="parent")
    a.sync()
    b.sync()
    with b.bound():
        Comment.create(note=note.id, text="written offline on b")
    with a.bound():
        Note.get_by_id(note.id).delete_instance(recursive=True)
    a.sync()
    report = b.sync()
    assert [r.outcome for r in report.conflicts] == ["deleted"]
    a.sync()
    for device in (a, b):
        with device.bound():
            assert Note.select().count() == 0
            assert Comment.select().count() == 0
    # the remote keeps no live child of a deleted parent
    assert all(d.deleted for d in remote.all_docs("comment").values())
