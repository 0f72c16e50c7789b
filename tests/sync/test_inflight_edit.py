"""A row edited while its upload is in flight stays dirty and goes up next time."""

from __future__ import annotations

import sqlite3

from replicator.testing import FaultyRemote
from tests.models import Note


def test_row_edited_during_upload_stays_dirty(make_device, remote, tmp_path):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        note = Note.create(title="before")

    def edit_from_another_program(*args, **kwargs):
        conn = sqlite3.connect(tmp_path / "a.db")
        conn.execute("UPDATE note SET title = 'during' WHERE id = ?", (note.id,))
        conn.commit()
        conn.close()
        faulty.hooks.clear()

    faulty.hooks["push"] = edit_from_another_program
    a.sync()
    assert remote.all_docs("note")[note.id].data["title"] == "before"
    with a.bound():
        row = Note.get_by_id(note.id)
        assert row.title == "during" and row.is_dirty
        assert row.server_id is None  # marked synced only if unchanged since read
    report = a.sync()
    assert report.uploaded == {"note": 1}
    assert not report.conflicts
    assert remote.all_docs("note")[note.id].data["title"] == "during"
    with a.bound():
        assert not Note.get_by_id(note.id).is_dirty
