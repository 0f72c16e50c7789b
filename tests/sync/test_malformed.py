"""A malformed remote document is set aside, named and retried; it never blocks the device."""

from __future__ import annotations

import sqlite3

import pytest

from replicator import EmbeddedRemote, RemoteDataError
from tests.models import Note


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
    with b.bound():
        mine = Note.create(title="b's own")
    report = b.sync()  # no raise: the bad document is set aside, the rest applies
    [entry] = report.set_aside
    err = entry.error
    assert isinstance(err, RemoteDataError)
    assert (entry.collection, entry.id) == ("note", bad.id)
    assert err.collection == "note" and err.doc_id == bad.id
    assert f"note/{bad.id}" in str(err) and reason in str(err)
    assert "set aside" in report.summary()
    with b.bound():
        assert {n.title for n in Note.select()} == {good.title, "b's own"}
    assert mine.id in remote.all_docs("note")  # b's upload still ran
    assert b.local.parked() == {"note": {bad.id: err.reason}}
    # still broken: set aside again, nothing else changes
    assert [e.id for e in b.sync().set_aside] == [bad.id]
    # once the document is repaired, the next sync applies it
    corrupt(remote, bad.id, '{"title": "repaired", "body": "", "updatedBy": "x"}')
    report = b.sync()
    assert report.set_aside == ()
    assert b.local.parked() == {}
    with b.bound():
        assert {n.title for n in Note.select()} == {good.title, "repaired", "b's own"}
    assert b.database.execute_sql("SELECT applying FROM replicator_control").fetchone()[0] == 0


@pytest.mark.parametrize("bad_id", ["", "a/b", ".", "..", "__reserved__", "x" * 37, "tab\there"])
def test_a_row_whose_id_no_store_can_hold_is_reported_and_the_rest_upload(
    make_device, remote, bad_id
):
    """Without the check, Firestore raised the client's ValueError out of sync() (or refused
    the whole batch), and the embedded store took ids other devices then set aside."""
    a = make_device("a")
    with a.bound():
        good = Note.create(title="fine")
    a.database.execute_sql(  # as an app choosing its own ids may write it
        "INSERT INTO note (id, title, body) VALUES (?, 'odd', '')", (bad_id,)
    )
    report = a.sync()
    assert report.total_uploaded == 1, report.summary()
    [rejected] = report.rejected
    assert rejected.id == bad_id
    assert "is not a row id" in str(rejected.error) and "another id" in str(rejected.error)
    assert set(remote.all_docs("note")) == {good.id}
    assert a.dirty_counts()["note"] == 1  # kept, still to upload once it has a usable id
    b = make_device("b")
    assert b.sync().set_aside == ()
    a.database.execute_sql("DELETE FROM note WHERE id = ?", (bad_id,))
    after = a.sync()  # its delete has nothing to delete remotely, and is not retried
    assert after.rejected == () and a.dirty_counts() == {"note": 0, "comment": 0}
    assert set(remote.all_docs("note")) == {good.id}
