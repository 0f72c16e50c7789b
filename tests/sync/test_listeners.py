"""Change listeners are told, after each committed step, which rows a sync changed."""

from __future__ import annotations

import sqlite3

import pytest

from replicator import Change, OfflineError
from replicator.testing import FaultyRemote
from tests.models import Comment, Note


def collect(device):
    seen: list[Change] = []
    device.subscribe(seen.append)
    return seen


def ids(changes, phase, collection, kind):
    return sorted(
        i
        for c in changes
        if c.phase == phase and c.collection == collection
        for i in getattr(c, kind)
    )


def test_downloaded_inserts_updates_and_deletes_are_told(make_device):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        kept = Note.create(title="kept")
        edited = Note.create(title="edited")
        gone = Note.create(title="gone")
        Comment.create(note=gone, text="goes with its note")
    a.sync()
    b.sync()
    seen = collect(b)
    with a.bound():
        new = [Note.create(title=f"new {i}").id for i in range(3)]
        Note.update(title="edited again").where(Note.id == edited.id).execute()
        Note.get_by_id(gone.id).delete_instance(recursive=True)
    a.sync()
    b.sync()
    assert ids(seen, "download", "note", "inserted") == sorted(new)
    assert ids(seen, "download", "note", "updated") == [edited.id]
    assert ids(seen, "download", "note", "deleted") == [gone.id]
    assert len(ids(seen, "download", "comment", "deleted")) == 1
    assert kept.id not in {i for c in seen for i in c.ids}
    assert not [c for c in seen if c.phase == "upload"]  # b uploaded nothing


def test_each_page_is_told_after_its_commit(make_device, tmp_path):
    a = make_device("a")
    b = make_device("b", page_size=3)
    with a.bound():
        made = [Note.create(title=f"n{i}").id for i in range(10)]
    a.sync()
    visible: list[tuple[int, int]] = []

    def check(change: Change) -> None:
        # another connection sees the rows told: the page is committed
        conn = sqlite3.connect(tmp_path / "b.db")
        marks = ",".join("?" * len(change.inserted))
        found = conn.execute(
            f"SELECT COUNT(*) FROM note WHERE id IN ({marks})", change.inserted
        ).fetchone()[0]
        conn.close()
        visible.append((len(change.inserted), found))

    b.subscribe(check)
    b.sync()
    assert len(visible) >= 4  # 10 notes in pages of 3
    assert all(told == found for told, found in visible)
    assert sum(told for told, _ in visible) == len(made)


def test_an_upload_tells_which_rows_are_now_synced(make_device):
    a = make_device("a")
    with a.bound():
        old = Note.create(title="old")
    a.sync()
    seen = collect(a)
    with a.bound():
        fresh = Note.create(title="fresh")
        Comment.create(note=fresh, text="c")
        Note.get_by_id(old.id).delete_instance()
    a.sync()
    assert ids(seen, "upload", "note", "uploaded") == [fresh.id]
    assert ids(seen, "upload", "note", "uploaded_deletes") == [old.id]
    assert len(ids(seen, "upload", "comment", "uploaded")) == 1
    # marking rows synced is not a change of their data
    assert not [c for c in seen if c.inserted or c.updated or c.deleted]


def test_a_merged_conflict_is_told_as_an_update(make_device):
    from replicator import FieldMerge

    a, b = make_device("a"), make_device("b", conflict_strategy=FieldMerge())
    with a.bound():
        note = Note.create(title="t", body="")
    a.sync()
    b.sync()
    with a.bound():
        Note.update(title="from a").where(Note.id == note.id).execute()
    with b.bound():
        Note.update(body="from b").where(Note.id == note.id).execute()
    a.sync()
    seen = collect(b)
    b.sync()
    assert ids(seen, "download", "note", "updated") == [note.id]  # the title came in
    assert ids(seen, "upload", "note", "uploaded") == [note.id]  # the merge went up
    with b.bound():
        merged = Note.get_by_id(note.id)
    assert (merged.title, merged.body) == ("from a", "from b")


def test_a_page_that_fails_is_not_told(tmp_path, make_device, remote):
    a = make_device("a")
    with a.bound():
        for i in range(6):
            Note.create(title=f"n{i}")
    a.sync()
    flaky = FaultyRemote(remote)
    b = make_device("b", store=flaky, page_size=2)
    seen = collect(b)
    real_pull = flaky.inner.pull
    calls = {"n": 0}

    def pull(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OfflineError("the network dropped mid-download")
        return real_pull(*args, **kwargs)

    flaky.inner.pull = pull
    with pytest.raises(OfflineError):
        b.sync()
    told_first = ids(seen, "download", "note", "inserted")
    with b.bound():
        assert sorted(n.id for n in Note.select()) == told_first  # told = committed
    flaky.inner.pull = real_pull
    b.sync()
    with b.bound():
        assert sorted(n.id for n in Note.select()) == ids(seen, "download", "note", "inserted")


def test_a_failing_listener_does_not_stop_the_sync_and_unsubscribe_works(make_device, caplog):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        Note.create(title="x")
    a.sync()

    def broken(change):
        raise RuntimeError("the UI is gone")

    seen: list[Change] = []
    b.subscribe(broken)
    stop = b.subscribe(seen.append)
    report = b.sync()
    assert report.downloaded == {"note": 1}
    assert len(seen) == 1 and "RuntimeError" in caplog.text
    stop()
    with a.bound():
        Note.create(title="y")
    a.sync()
    b.sync()
    assert len(seen) == 1


def test_without_listeners_nothing_is_noted(make_device):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        Note.create(title="x")
    a.sync()
    b.sync()
    temp = b.database.execute_sql("SELECT name FROM sqlite_temp_master").fetchall()
    assert temp == []


def test_on_change_in_the_constructor(make_device):
    seen: list[Change] = []
    a = make_device("a", on_change=seen.append)
    with a.bound():
        note = Note.create(title="x")
    a.sync()
    assert [c.uploaded for c in seen] == [(note.id,)]
