"""A device knows its own writes by what it sent, and a wrong clock cannot win a conflict.

Own writes: a document that claims this device's installation id in
``updatedBy`` but was never written by it is downloaded like any other; a batch
whose acknowledgement was lost is recognised by its content, so the next sync
reports no conflict. Clocks: each sync measures the device clock against the
store's commit times; uploads and last-writer-wins use corrected times.
"""

from __future__ import annotations

import datetime as _dt
import time

import pytest

from replicator import DeviceRecord, OfflineError, Write
from replicator.testing import FaultyRemote
from tests.models import Note


def test_a_document_claiming_my_id_that_i_never_wrote_is_downloaded(make_device, remote):
    a, b = make_device("a"), make_device("b")
    b.sync()
    forged = "0f0f0f0f-0000-4000-8000-000000000001"
    remote.push(
        [Write("note", forged, {"title": "not b's", "body": "", "updatedBy": b.installation_id})],
        DeviceRecord(installation_id="writer"),
    )
    b.sync()
    with b.bound():
        assert Note.get_by_id(forged).title == "not b's"
    a.sync()
    with a.bound():
        assert Note.get_by_id(forged).title == "not b's"


def test_a_forged_edit_of_a_dirty_row_is_a_reported_conflict_not_ignored(make_device, remote):
    b = make_device("b")
    with b.bound():
        note = Note.create(title="mine")
    b.sync()
    current = remote.get("note", [note.id])[note.id]
    remote.push(
        [
            Write(
                "note",
                note.id,
                {"title": "forged", "updatedBy": b.installation_id},
                base_version=current.version,
            )
        ],
        DeviceRecord(installation_id="writer"),
    )
    with b.bound():
        Note.update(body="local edit").where(Note.id == note.id).execute()
    report = b.sync()
    assert [c.id for c in report.conflicts] == [note.id]


def test_lost_acknowledgement_then_edits_reports_no_conflict(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    a.sync()
    with a.bound():
        note = Note.create(title="v1")
        other = Note.create(title="w1")
    faulty.fail("push", after=True)
    with pytest.raises(OfflineError):
        a.sync()
    with a.bound():
        Note.update(title="v2").where(Note.id == note.id).execute()
    report = a.sync()
    assert report.conflicts == ()
    docs = remote.all_docs("note")
    assert docs[note.id].data["title"] == "v2" and docs[other.id].data["title"] == "w1"
    assert a.dirty_counts()["note"] == 0
    assert a.sync().conflicts == ()


def _skewed(days: float):
    return lambda: _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=days)


def _age_dirty_row(device, note_id: str, days: float) -> None:
    """What a device whose clock is ``days`` off writes into updatedOn."""
    with device.local.applying():
        (stamp,) = device.database.execute_sql(
            'SELECT "updatedOn" FROM note WHERE id = ?', (note_id,)
        ).fetchone()
        when = _dt.datetime.fromisoformat(stamp) + _dt.timedelta(days=days)
        device.database.execute_sql(
            'UPDATE note SET "updatedOn" = ? WHERE id = ?', (when.isoformat(" "), note_id)
        )


@pytest.mark.parametrize("fast_syncs_first", [False, True])
def test_a_device_a_day_ahead_cannot_win_with_an_older_edit(make_device, remote, fast_syncs_first):
    fast = make_device("fast", clock=_skewed(1))
    right = make_device("right")
    with right.bound():
        note = Note.create(title="start")
    right.sync()
    fast.sync()  # measures its clock against the store: a day ahead
    assert fast.local.clock_offset == pytest.approx(-86400, abs=60)
    with fast.bound():
        Note.update(title="older edit, on the fast clock").where(Note.id == note.id).execute()
    _age_dirty_row(fast, note.id, 1)
    time.sleep(0.5)  # well beyond the offset's precision (half a round trip to the store)
    with right.bound():
        Note.update(title="newer edit").where(Note.id == note.id).execute()
    order = [fast, right] if fast_syncs_first else [right, fast]
    for device in order:
        device.sync()
    for device in order:
        device.sync()
    for device in (fast, right):
        with device.bound():
            assert Note.get_by_id(note.id).title == "newer edit"
    assert remote.all_docs("note")[note.id].data["title"] == "newer edit"


def test_an_edit_after_a_lost_ack_survives_another_devices_merge(make_device, remote):
    """Found by the convergence property: c's write commits but its acknowledgement is
    lost; a merges its own edit over that version; c edits the same field again. The
    field's common ancestor is what c sent, not c's older base, so c's new edit wins."""
    from replicator import FieldMerge

    merge = FieldMerge()
    a = make_device("a", conflict_strategy=merge)
    faulty = FaultyRemote(remote)
    c = make_device("c", store=faulty, conflict_strategy=merge)
    with a.bound():
        note = Note.create(title="t0", body="b0")
    a.sync()
    c.sync()
    with c.bound():
        Note.update(body="c1").where(Note.id == note.id).execute()
    faulty.fail("push", after=True)
    with pytest.raises(OfflineError):
        c.sync()
    with a.bound():
        Note.update(title="a1").where(Note.id == note.id).execute()
    with c.bound():
        Note.update(body="c2").where(Note.id == note.id).execute()
    time.sleep(0.01)
    a.sync()  # meets c's committed write, merges: title a1, body c1 (updatedOn: now)
    c.sync()
    a.sync()
    for device in (a, c):
        with device.bound():
            row = Note.get_by_id(note.id)
            assert (row.title, row.body) == ("a1", "c2")


def test_own_uploads_coming_back_are_skipped_by_version_not_applied_again(make_device, remote):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        for i in range(5):
            Note.create(title=f"mine {i}")
    a.sync()
    with b.bound():
        Note.create(title="theirs")
    b.sync()
    report = a.sync()  # another device uploaded: a pulls the collection, its own 5 included
    assert report.downloaded == {"note": 1}, report.downloaded


def test_a_merge_base_of_another_version_is_not_used_to_pick_the_columns_sent(make_device, remote):
    # the row stands over version 2; a base left from version 1 would make a column the
    # row shares with it look unchanged, and the remote would keep version 2's value
    a, b = make_device("a"), make_device("b")
    with a.bound():
        note = Note.create(title="t", body="x")
    a.sync()
    b.sync()
    with b.bound():
        Note.update(body="y").where(Note.id == note.id).execute()
    b.sync()
    stale = dict(remote.all_docs("note")[note.id].data, body="x")
    a.sync()  # a now holds body "y" at version 2
    with a.local.applying():
        a.local.set_base("note", note.id, "a-version-long-gone", stale)
    with a.bound():
        Note.update(body="x", title="t2").where(Note.id == note.id).execute()
    a.sync()
    assert remote.all_docs("note")[note.id].data["body"] == "x"
    assert remote.all_docs("note")[note.id].data["title"] == "t2"
