"""A crash between the upload's commit and mark-clean converges without duplicates."""

from __future__ import annotations

import os

import pytest

from replicator import ClientWins, ConflictError, OfflineError
from replicator.sync.upload import MAX_CONFLICT_ROUNDS
from replicator.testing import FaultyRemote
from tests.helpers import ALSO_AS_USERS, snapshot_rows
from tests.models import Comment, Note

pytestmark = ALSO_AS_USERS


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


class LosesAcks(FaultyRemote):
    """A store whose next ``lose`` pushes that commit raise afterwards (a push that fails
    on its own, a precondition, does not use one up)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.lose = 0
        self.pushes = 0

    def push(self, writes, device):
        self.pushes += 1
        hook = self.hooks.get("push")
        if hook is not None:
            hook(writes, device)
        result = self.inner.push(writes, device)
        if self.lose:
            self.lose -= 1
            raise OfflineError("injected: the acknowledgement of a committed push was lost")
        return result


def _add_notes(device, n, tag):
    with device.bound():
        notes = [{"title": f"{tag}{i}"} for i in range(n)]
        for start in range(0, n, 500):
            Note.insert_many(notes[start : start + 500]).execute()
        ids = [r.id for r in Note.select(Note.id).where(Note.title.startswith(tag))]
        Comment.insert_many([{"note": i, "text": f"on {i}"} for i in ids[::10]]).execute()


def _backlog_with_lost_acks(make_device, remote, rows, lost=3):
    """A device whose ``lost`` syncs each committed a batch it never heard of, and which
    wrote more rows offline after each: its backlog of ``rows`` notes is dirty, with the
    unacknowledged ones scattered through it."""
    store = LosesAcks(remote)
    a = make_device("a", store=store)
    chunk = rows // (2 * lost)
    for k in range(lost):
        _add_notes(a, chunk, f"before{k}-")
        store.lose = 1
        with pytest.raises(OfflineError):
            a.sync()
    _add_notes(a, rows - lost * chunk, "after-")
    return a, store


def test_lost_acknowledgements_in_a_large_backlog_are_no_conflict(make_device, remote):
    """With no other writer, a backlog holding several batches committed remotely but never
    acknowledged uploads in one sync: no ConflictError, no conflict reported, nothing
    duplicated, and the unacknowledged batches cost one failed push, not one per batch.
    REPLICATOR_LOST_ACK_ROWS=20000 runs it at the size of a device offline for weeks."""
    rows = int(os.environ.get("REPLICATOR_LOST_ACK_ROWS", "4000"))
    a, store = _backlog_with_lost_acks(make_device, remote, rows)
    dirty = a.dirty_counts()
    store.pushes = 0
    report = a.sync()
    assert report.conflicts == (), report.summary()
    assert a.dirty_counts() == {"note": 0, "comment": 0}
    per_batch = remote.max_batch_writes - 1
    assert store.pushes <= -(-sum(dirty.values()) // per_batch) + 1, store.pushes
    assert len(remote.all_docs("note")) == rows
    assert len(remote.all_docs("comment")) == len(snapshot_rows(a)["comment"])
    b = make_device("b")
    b.sync()
    assert snapshot_rows(b) == snapshot_rows(a)
    assert a.database.execute_sql("SELECT count(*) FROM replicator_sent").fetchone() == (0,)


def test_another_writer_among_lost_acknowledgements_is_still_a_conflict(make_device, remote):
    """A row another device changed during the upload, among rows of this device's
    unacknowledged sends, is a real conflict: resolved by the strategy and reported, never
    written over; the unacknowledged rows around it are recognised silently."""
    a, store = _backlog_with_lost_acks(make_device, remote, 1_200, lost=1)
    b = make_device("b")
    b.sync()  # b now holds the unacknowledged batch, as the remote does
    with b.bound():
        theirs = Note.select().order_by(Note.id).first().id  # in a's first batch

    def b_edits_first(*args):
        store.hooks.clear()
        with b.bound():
            Note.update(title="edited on b").where(Note.id == theirs).execute()
        b.sync()

    store.hooks["push"] = b_edits_first
    report = a.sync()
    assert [(c.collection, c.id, c.outcome) for c in report.conflicts] == [
        ("note", theirs, "remote")
    ]
    assert remote.all_docs("note")[theirs].data["title"] == "edited on b"
    assert a.dirty_counts() == {"note": 0, "comment": 0}
    b.sync()
    assert snapshot_rows(a) == snapshot_rows(b)


def test_a_writer_that_keeps_beating_the_upload_ends_in_conflict_error(make_device, remote):
    """Another device writing the row before every one of this device's pushes, under a
    strategy that keeps the local row: the upload gives up with ConflictError after
    MAX_CONFLICT_ROUNDS, having overwritten nothing; the row stays dirty."""
    a, b = make_device("a", conflict_strategy=ClientWins()), make_device("b")
    with a.bound():
        note = Note.create(title="base")
    a.sync()
    b.sync()
    faulty = FaultyRemote(remote)
    a.remote = faulty
    writes = []

    def b_writes_first(*args, **kwargs):
        writes.append(len(writes))
        with b.bound():
            Note.update(title=f"b {len(writes)}").where(Note.id == note.id).execute()
        b.sync()

    faulty.hooks["push"] = b_writes_first
    with a.bound():
        Note.update(title="a's edit").where(Note.id == note.id).execute()
    with pytest.raises(ConflictError) as caught:
        a.sync()
    assert caught.value.retryable
    assert len(writes) == MAX_CONFLICT_ROUNDS
    assert remote.all_docs("note")[note.id].data["title"] == f"b {len(writes)}"
    assert a.dirty_counts()["note"] == 1
    faulty.hooks.clear()
    a.sync()  # once b stops, a's edit goes up over b's, as the strategy decided
    assert remote.all_docs("note")[note.id].data["title"] == "a's edit"
