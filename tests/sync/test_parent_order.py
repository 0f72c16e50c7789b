"""A child never arrives before its parent, even when the parent is newer."""

from __future__ import annotations

from replicator.testing import FaultyRemote
from tests.helpers import snapshot_rows
from tests.models import Comment, Note


def test_children_arrive_after_parents_with_foreign_keys_on(make_device):
    a = make_device("a")
    with a.bound():
        for i in range(5):
            note = Note.create(title=f"n{i}")
            for j in range(3):
                Comment.create(note=note, text=f"c{i}.{j}")
    a.sync()
    # models given child-first, tiny pages: order must come from the foreign keys
    b = make_device("b", models=[Comment, Note], page_size=1)
    assert b.database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    b.sync()
    assert snapshot_rows(b) == snapshot_rows(a)


def test_parent_written_after_the_parent_pass_is_fetched_first(make_device, remote):
    a, c = make_device("a"), make_device("c")
    with a.bound():
        Note.create(title="old")
    a.sync()
    faulty = FaultyRemote(remote)
    b = make_device("b", store=faulty)
    state = {"done": False}

    def race(collection, *args, **kwargs):
        # while b reads comments, c uploads a new note and a comment on it
        if collection == "comment" and not state["done"]:
            state["done"] = True
            with c.bound():
                fresh = Note.create(title="fresh")
                Comment.create(note=fresh, text="on a note b has not seen")
            c.sync()

    faulty.hooks["pull"] = race
    b.sync()
    assert "get" in faulty.calls
    c.sync()
    assert snapshot_rows(b) == snapshot_rows(c)
    with b.bound():
        assert {n.title for n in Note.select()} == {"old", "fresh"}


def test_changes_sharing_a_timestamp_cross_page_boundaries_once(make_device, remote):
    """One upload batch shares one server timestamp on Firestore: pages of 2 must still
    deliver every change exactly once."""
    a = make_device("a")
    with a.bound():
        for i in range(7):
            Note.create(title=f"same batch {i}")
    a.sync()
    seen = []
    b = make_device("b", page_size=2, on_progress=seen.append)
    report = b.sync()
    assert report.downloaded == {"note": 7}
    assert snapshot_rows(b) == snapshot_rows(a)
    assert len([p for p in seen if p.phase == "download" and p.collection == "note"]) >= 4
    assert b.sync().idle
