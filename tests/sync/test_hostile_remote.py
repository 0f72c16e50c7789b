"""Hostile or damaged remote data never crashes a sync and never blocks other data.

Each bad document becomes a ``RemoteDataError`` naming its collection and id,
set aside and reported in ``SyncReport.set_aside``; the good documents around
it are applied and the device's own upload runs. A damaged Devices record
never hides the other devices' uploads.
"""

from __future__ import annotations

import sqlite3

import pytest

from replicator import DeviceRecord, EmbeddedRemote, RemoteDataError, Write
from tests.models import Comment, Note

HOSTILE = DeviceRecord(installation_id="hostile-writer")

# (case, collection, id, data): values any store can carry
COMMON = [
    ("list where text", "note", "10000000-0000-4000-8000-000000000001", {"title": [1, 2]}),
    ("map where text", "note", "10000000-0000-4000-8000-000000000002", {"title": {"a": 1}}),
    ("text is null", "note", "10000000-0000-4000-8000-000000000003", {"title": None}),
    ("bytes where text", "note", "10000000-0000-4000-8000-000000000004", {"title": b"\x00"}),
    ("NaN where text", "note", "10000000-0000-4000-8000-000000000005", {"title": float("nan")}),
    ("id too long", "note", "x" * 100, {"title": "long id"}),
    ("id with a newline", "note", "line\nbreak", {"title": "bad id"}),
    (
        "key is a number",
        "comment",
        "10000000-0000-4000-8000-000000000006",
        {"note_id": 12, "text": "t"},
    ),
    (
        "parent missing",
        "comment",
        "10000000-0000-4000-8000-000000000007",
        {"note_id": "20000000-0000-4000-8000-000000000000", "text": "t"},
    ),
]
# values only a JSON store can carry (Firestore's client refuses to send them)
EMBEDDED_ONLY = [
    (
        "int beyond 64 bits",
        "note",
        "10000000-0000-4000-8000-000000000008",
        {"title": "t", "body": 10**30},
    ),
    ("lone surrogate", "note", "10000000-0000-4000-8000-000000000009", {"title": "\ud800"}),
    (
        "int beyond 64 bits in a key",
        "comment",
        "10000000-0000-4000-8000-00000000000a",
        {"note_id": -(10**25), "text": "t"},
    ),
]


def test_every_bad_document_is_set_aside_and_named(make_device, remote):
    cases = COMMON + (EMBEDDED_ONLY if isinstance(remote, EmbeddedRemote) else [])
    a, b = make_device("a"), make_device("b")
    with a.bound():
        good = Note.create(title="good")
        Comment.create(note=good, text="good comment")
    a.sync()
    for _case, collection, doc_id, data in cases:
        remote.push([Write(collection, doc_id, {**data, "updatedBy": "x"})], HOSTILE)
    with a.bound():
        later = Note.create(title="written after the bad ones")
    a.sync()
    with b.bound():
        mine = Note.create(title="b's own")
    report = b.sync()
    named = {(e.collection, e.id) for e in report.set_aside}
    for case, collection, doc_id, _data in cases:
        shown = doc_id if doc_id.isprintable() and len(doc_id) <= 36 else repr(doc_id)[:60]
        assert (collection, shown) in named, f"{case} was not set aside"
    for entry in report.set_aside:
        assert isinstance(entry.error, RemoteDataError)
        assert f"{entry.collection}/" in str(entry.error)
    assert len(report.set_aside) == len(cases)
    with b.bound():
        assert {n.title for n in Note.select()} == {"good", later.title, "b's own"}
        assert Comment.select().count() == 1
    assert mine.id in remote.all_docs("note")
    # the next sync retries them and stays calm
    again = b.sync()
    assert len(again.set_aside) == len([c for c in cases if c[2].isprintable() and len(c[2]) <= 36])


def _damage_device_record(remote, value) -> None:
    if isinstance(remote, EmbeddedRemote):
        conn = sqlite3.connect(remote.path)
        conn.execute(
            "INSERT OR REPLACE INTO devices (installation_id, record, last_upload, last_sync)"
            " VALUES ('hostile', ?, ?, 'garbage')",
            ("{not json" if isinstance(value, str) else '["a list"]', value),
        )
        conn.commit()
        conn.close()
    else:
        remote._collection("devices").document("hostile").set(
            {"lastUpload": value, "watermarks": "not a map", "name": 7}
        )


@pytest.mark.parametrize("value", ["garbage", 2**70 * 1.0, 2**62, -5], ids=str)
def test_a_damaged_devices_record_never_hides_the_other_devices(make_device, remote, value):
    a, b = make_device("a"), make_device("b")
    a.sync()
    b.sync()
    _damage_device_record(remote, value)
    with a.bound():
        note = Note.create(title="must arrive")
    a.sync()
    b.sync()
    with b.bound():
        assert Note.get_by_id(note.id).title == "must arrive"
    records = remote.devices()
    assert {r.installation_id for r in records} >= {a.installation_id, b.installation_id}


# only Firestore orders by a change time a writer can damage; the embedded store uses its own
# sequence
@pytest.mark.parametrize("remote", ["firestore"], indirect=True)
def test_a_document_with_a_damaged_change_time_does_not_stall_the_download(make_device, remote):
    a, b = make_device("a", page_size=2), make_device("b", page_size=2)
    with a.bound():
        first = Note.create(title="first")
    a.sync()
    remote._collection("note").document("30000000-0000-4000-8000-000000000000").set(
        {"title": "bad clock", "body": "", "changedAt": "yesterday", "deleted": False}
    )
    with a.bound():
        for i in range(3):
            Note.create(title=f"after {i}")
    a.sync()
    report = b.sync()
    with b.bound():
        titles = {n.title for n in Note.select()}
    assert titles == {first.title, "after 0", "after 1", "after 2"}
    assert report.set_aside == () or all(e.collection == "note" for e in report.set_aside)
