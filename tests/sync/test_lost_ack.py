"""A crash between the upload's commit and mark-clean converges without duplicates."""

from __future__ import annotations

import pytest

from replicator import OfflineError
from replicator.testing import FaultyRemote
from tests.helpers import snapshot_rows
from tests.models import Comment, Note


def test_lost_acknowledgement_is_retried_without_duplicates(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        note = Note.create(title="once")
        Comment.create(note=note, text="only once")
    faulty.fail("push", after=True)
    with pytest.raises(OfflineError):
        a.sync()
    # committed remotely, but the device never heard: still dirty, no serverId
    assert len(remote.all_docs("note")) == 1
    with a.bound():
        assert Note.get_by_id(note.id).is_dirty
        assert Note.get_by_id(note.id).server_id is None
    report = a.sync()
    assert not report.conflicts
    with a.bound():
        assert not Note.get_by_id(note.id).is_dirty
        assert Note.get_by_id(note.id).server_id == note.id
    assert len(remote.all_docs("note")) == 1
    assert len(remote.all_docs("comment")) == 1
    b = make_device("b")
    b.sync()
    assert snapshot_rows(b) == snapshot_rows(a)


def test_lost_ack_then_local_edit_uploads_the_edit(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        note = Note.create(title="v1")
    faulty.fail("push", after=True)
    with pytest.raises(OfflineError):
        a.sync()
    with a.bound():
        Note.update(title="v2").where(Note.id == note.id).execute()
    a.sync()
    assert remote.all_docs("note")[note.id].data["title"] == "v2"
    assert a.dirty_counts() == {"note": 0, "comment": 0}
    # every send of the row is forgotten once one is acknowledged, the lost one included
    assert a.database.execute_sql("SELECT count(*) FROM replicator_sent").fetchone() == (0,)


def test_failed_pushes_of_the_same_values_are_journaled_once(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        Note.create(title="v1")
    for _ in range(3):  # an offline device syncing again and again
        faulty.fail("push")
        with pytest.raises(OfflineError):
            a.sync()
    assert a.database.execute_sql("SELECT count(*) FROM replicator_sent").fetchone() == (1,)


def test_a_journal_of_the_earlier_layout_still_recognises_a_lost_ack(make_device, remote, tmp_path):
    """A database whose journal was keyed on the JSON itself (before the digest key) moves
    to the new layout when opened, and the send it holds is still recognised as its own."""
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        note = Note.create(title="v1")
    faulty.fail("push", after=True)  # committed remotely, acknowledgement lost
    with pytest.raises(OfflineError):
        a.sync()
    db = a.database
    rows = db.execute_sql("SELECT collection, id, sent FROM replicator_sent").fetchall()
    assert len(rows) == 1
    db.execute_sql("DROP TABLE replicator_sent")
    db.execute_sql(
        "CREATE TABLE replicator_sent (collection TEXT NOT NULL, id TEXT NOT NULL,"
        " sent TEXT NOT NULL, PRIMARY KEY (collection, id, sent))"
    )
    db.connection().executemany("INSERT INTO replicator_sent VALUES (?, ?, ?)", rows)
    db.close()
    again = make_device("a", store=remote)  # the same file, opened by a newer replicator
    assert (
        again.database.execute_sql("SELECT collection, id, sent FROM replicator_sent").fetchall()
        == rows
    )
    report = again.sync()
    assert report.conflicts == (), report.summary()
    assert again.dirty_counts() == {"note": 0, "comment": 0}
    assert remote.all_docs("note")[note.id].data["title"] == "v1"
    assert again.database.execute_sql("SELECT count(*) FROM replicator_sent").fetchone() == (0,)
