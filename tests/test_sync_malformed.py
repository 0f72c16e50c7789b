"""A malformed remote document stops the sync with an error naming it; nothing is half-applied."""

from __future__ import annotations

import sqlite3

import pytest

from replicator import EmbeddedRemote, RemoteDataError
from replicator.demo import Note


def corrupt(remote, doc_id, data_text):
    if not isinstance(remote, EmbeddedRemote):
        # Firestore documents are always maps: the bad values come as fields
        fields = {"title": "repaired", "body": ""} if "repaired" in data_text else {}
        if "42" in data_text:
            fields["title"] = 42
        elif "null" in data_text:
            fields["title"] = None
        elif not fields:
            fields["title"] = {"not": "text"}
        remote._collection("note").document(doc_id).update(fields)
        return
    conn = sqlite3.connect(remote.path)
    conn.execute("UPDATE docs SET data = ? WHERE id = ?", (data_text, doc_id))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('"just a string"', "not a map"),
        ('{"title": 42, "updatedBy": "x"}', "title holds a int"),
        ('{"title": null, "updatedBy": "x"}', "title is null"),
        ("{not json", "not valid JSON"),
    ],
)
def test_malformed_document_names_collection_and_id(make_device, remote, data, reason):
    if not isinstance(remote, EmbeddedRemote) and "JSON" in reason:
        reason = "title holds a dict"  # a map where text belongs
    elif not isinstance(remote, EmbeddedRemote) and "map" in reason:
        reason = "title holds a dict"
    a, b = make_device("a"), make_device("b")
    with a.bound():
        good = Note.create(title="good")
        bad = Note.create(title="bad")
    a.sync()
    corrupt(remote, bad.id, data)
    with pytest.raises(RemoteDataError) as info:
        b.sync()
    err = info.value
    assert err.collection == "note" and err.doc_id == bad.id
    assert f"note/{bad.id}" in str(err) and reason in str(err)
    # the page holding the bad document was rolled back with its cursor
    with b.bound():
        assert Note.select().count() == 0
    assert b.local.tracker("note") is None
    # once the document is repaired, the next sync resumes at it
    corrupt(remote, bad.id, '{"title": "repaired", "body": "", "updatedBy": "x"}')
    b.sync()
    with b.bound():
        assert {n.title for n in Note.select()} == {good.title, "repaired"}
    assert b.database.execute_sql("SELECT applying FROM replicator_control").fetchone()[0] == 0
