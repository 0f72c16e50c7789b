"""Concurrent edits of one row are detected and resolved, never silently overwritten."""

from __future__ import annotations

import datetime as dt

from replicator import ClientWins, ServerWins
from replicator.testing import FaultyRemote
from tests.helpers import ALSO_AS_USERS, snapshot_rows
from tests.models import Note

pytestmark = ALSO_AS_USERS


def set_clock(device, note_id, when):
    # make the device's write time explicit (the engine reads updatedOn as data)
    device.local.db.execute_sql("UPDATE replicator_control SET applying = 1")
    device.database.execute_sql(
        'UPDATE note SET "updatedOn" = ? WHERE id = ?', (when.isoformat(sep=" "), note_id)
    )
    device.local.db.execute_sql("UPDATE replicator_control SET applying = 0")


def two_devices_with_a_note(make_device, **kw):
    a, b = make_device("a", **kw), make_device("b", **kw)
    with a.bound():
        note = Note.create(title="base")
    a.sync()
    b.sync()
    return a, b, note


def test_last_writer_wins_by_default(make_device):
    a, b, note = two_devices_with_a_note(make_device)
    with b.bound():
        Note.update(title="from b, earlier").where(Note.id == note.id).execute()
    with a.bound():
        Note.update(title="from a, later").where(Note.id == note.id).execute()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    set_clock(b, note.id, now - dt.timedelta(minutes=5))
    set_clock(a, note.id, now)
    b.sync()
    report = a.sync()
    assert [c.outcome for c in report.conflicts] == ["local"]
    assert report.conflicts[0].strategy == "last-writer-wins"
    b.sync()
    assert snapshot_rows(a) == snapshot_rows(b)
    with b.bound():
        assert Note.get_by_id(note.id).title == "from a, later"


def test_remote_change_between_download_and_upload_is_detected(make_device, remote):
    a, b, note = two_devices_with_a_note(make_device)
    faulty = FaultyRemote(remote)
    a.remote = faulty

    def b_writes_first(*args, **kwargs):
        faulty.hooks.clear()
        with b.bound():
            Note.update(title="b slipped in").where(Note.id == note.id).execute()
        b.sync()

    with a.bound():
        Note.update(title="a's edit").where(Note.id == note.id).execute()
    faulty.hooks["push"] = b_writes_first
    report = a.sync()
    assert "get" in faulty.calls  # the failed precondition made a fetch the remote version
    assert len(report.conflicts) == 1
    b.sync()
    assert snapshot_rows(a) == snapshot_rows(b)
    assert a.dirty_counts()["note"] == 0


def test_server_wins_and_client_wins(make_device, tmp_path):
    for strategy, expected in ((ServerWins(), "remote"), (ClientWins(), "local")):

        def named(name, suffix=expected, **kw):
            return make_device(f"{name}-{suffix}", **kw)

        a, b, note = two_devices_with_a_note(named, conflict_strategy=strategy)
        with a.bound():
            Note.update(title="a").where(Note.id == note.id).execute()
        with b.bound():
            Note.update(title="b").where(Note.id == note.id).execute()
        a.sync()
        report = b.sync()
        assert [c.outcome for c in report.conflicts] == [expected]
        a.sync()
        assert snapshot_rows(a) == snapshot_rows(b)
        with a.bound():
            assert Note.get_by_id(note.id).title == ("a" if expected == "remote" else "b")


def test_conflict_callback_sees_every_resolution(make_device):
    seen = []
    a, b, note = two_devices_with_a_note(make_device, on_conflict=seen.append)
    with a.bound():
        Note.update(title="a").where(Note.id == note.id).execute()
    with b.bound():
        Note.update(title="b").where(Note.id == note.id).execute()
    a.sync()
    report = b.sync()
    assert seen == list(report.conflicts) and len(seen) == 1
    assert seen[0].local["title"] == "b" and seen[0].remote["title"] == "a"
    assert seen[0].base["title"] == "base"
