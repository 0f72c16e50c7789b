"""The RemoteStore contract (stores/base.py), run against every remote store."""

from __future__ import annotations

import pytest

from replicator import ConfigurationError, DeviceRecord, PreconditionFailed, Write

ME = DeviceRecord(installation_id="device-me", name="me")
OTHER = DeviceRecord(installation_id="device-other", name="other")


def w(doc_id, title="t", by="device-me", **kw):
    return Write("note", doc_id, {"id": doc_id, "title": title, "updatedBy": by}, **kw)


def pull_all(store, collection="note", limit=2, exclude_by=None, after=None):
    seen, cursor = [], after
    while True:
        page = store.pull(collection, cursor, limit, exclude_by=exclude_by)
        seen += page.docs
        if page.cursor is not None:
            cursor = page.cursor
        if not page.more:
            return seen, cursor


def test_pull_pages_in_commit_order_without_gaps_or_repeats(store):
    # one batch: on stores whose clock is the commit time, all five share a timestamp
    store.push([w(f"id{i}") for i in range(5)], ME)
    store.push([w("id1", title="again", base_version=_version(store, "id1"))], ME)
    docs, cursor = pull_all(store, limit=2)
    assert [d.id for d in docs] == ["id0", "id2", "id3", "id4", "id1"]
    assert docs[-1].data["title"] == "again"
    again, _ = pull_all(store, after=cursor)
    assert again == []


def test_pull_skips_excluded_writer_but_advances(store):
    store.push([w("mine")], ME)
    store.push([w("theirs", by="device-other")], OTHER)
    store.push([w("mine2")], ME)
    docs, cursor = pull_all(store, exclude_by="device-me", limit=1)
    assert [d.id for d in docs] == ["theirs"]
    store.push([w("later", by="device-other")], OTHER)
    docs, _ = pull_all(store, after=cursor, exclude_by="device-me")
    assert [d.id for d in docs] == ["later"]


def _version(store, doc_id, collection="note"):
    return store.get(collection, [doc_id])[doc_id].version


def test_create_precondition_fails_when_the_document_exists(store):
    store.push([w("a")], ME)
    with pytest.raises(PreconditionFailed) as info:
        store.push([w("b"), w("a", title="dup")], ME)  # a retried create
    assert info.value.keys in ([("note", "a")], [])
    docs = store.get("note", ["a", "b"])
    assert set(docs) == {"a"}, "a failed batch writes nothing"
    assert docs["a"].data["title"] == "t"


def test_update_precondition_compares_versions(store):
    store.push([w("a")], ME)
    v1 = _version(store, "a")
    store.push([w("a", title="two", base_version=v1)], ME)
    v2 = _version(store, "a")
    assert v2 != v1
    with pytest.raises(PreconditionFailed):
        store.push([w("a", title="stale", base_version=v1)], ME)
    assert store.get("note", ["a"])["a"].data["title"] == "two"


def test_unconditional_tombstone_and_get(store):
    store.push([w("a"), w("b")], ME)
    store.push(
        [Write("note", "a", {"updatedBy": "device-me"}, deleted=True, unconditional=True)], ME
    )
    docs = store.get("note", ["a", "b", "missing"])
    assert set(docs) == {"a", "b"}
    assert docs["a"].deleted and not docs["b"].deleted
    assert docs["a"].data["title"] == "t"  # a tombstone keeps the last data


def test_writes_merge_over_unknown_fields(store):
    store.push([Write("note", "a", {"id": "a", "title": "t", "color": "red"})], ME)
    store.push([w("a", title="new", base_version=_version(store, "a"))], ME)
    data = store.get("note", ["a"])["a"].data
    assert data["title"] == "new" and data["color"] == "red"


def test_value_types_round_trip(store):
    values = {"id": "a", "i": 7, "f": 1.5, "s": "é", "b": b"\x00\xff", "n": None, "t": True}
    store.push([Write("note", "a", values)], ME)
    assert dict(store.get("note", ["a"])["a"].data) == values


def test_uploads_after_sees_other_devices_only(store):
    """Positions are opaque: the engine passes back what the check returned."""
    assert store.uploads_after(None, exclude="device-me") is None
    store.push([w("a")], ME)
    assert store.uploads_after(None, exclude="device-me") is None  # only my own upload
    store.push([w("b", by="device-other")], OTHER)
    seen = store.uploads_after(None, exclude="device-me")
    assert seen is not None
    assert store.uploads_after(seen, exclude="device-me") is None  # caught up: idle
    assert store.uploads_after(None, exclude="device-other") is not None
    store.register(OTHER)  # a registration is not an upload
    assert store.uploads_after(seen, exclude="device-me") is None
    store.push([w("c", by="device-other")], OTHER)
    newer = store.uploads_after(seen, exclude="device-me")
    assert newer is not None and store.uploads_after(newer, exclude="device-me") is None


def test_device_records(store):
    store.register(DeviceRecord("device-me", name="phone", app_version="1.0"))
    store.push([w("a")], DeviceRecord("device-me", name="phone", watermarks={"note": "x"}))
    devices = {d.installation_id: d for d in store.devices()}
    me = devices["device-me"]
    assert me.name == "phone" and me.last_upload is not None and me.last_sync
    assert dict(me.watermarks) == {"note": "x"}


def test_batch_limit_is_enforced(store):
    too_many = [w(f"id{i}") for i in range(store.max_batch_writes)]
    with pytest.raises(ConfigurationError):
        store.push(too_many, ME)
    store.push(too_many[:-1], ME)
    docs, _ = pull_all(store, limit=1000)
    assert len(docs) == store.max_batch_writes - 1


def test_usage_counts_reads_and_writes(store):
    before = store.usage.copy()
    store.push([w("a"), w("b")], ME)
    store.pull("note", None, 10)
    used = store.usage.minus(before)
    assert used.writes == 3  # two documents and the device record
    assert used.reads >= 2 and used.bytes_written > 0


def test_purge_removes_only_old_tombstones_and_raises_the_horizon(store):
    import datetime as dt

    from replicator.stores.base import Compactable

    assert isinstance(store, Compactable)
    store.push([w(f"id{i}") for i in range(4)], ME)
    store.push([w(f"id{i}", deleted=True, unconditional=True) for i in range(3)], ME)
    tombs = {d.id: d for d in store.get("note", ["id0", "id1", "id2"]).values()}
    cut = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    assert store.purge_tombstones("note", cut - dt.timedelta(days=1), 10) == 0  # too young
    assert store.horizons() == {}
    assert store.purge_tombstones("note", cut, 2) == 2  # bounded by the limit
    first = store.horizons()["note"]
    assert first in {tombs[i].cursor for i in tombs}
    assert store.purge_tombstones("note", cut, 10) == 1
    assert store.purge_tombstones("note", cut, 10) == 0
    horizon = store.horizons()["note"]
    assert horizon >= first and horizon == max(t.cursor for t in tombs.values())
    left = store.get("note", [f"id{i}" for i in range(4)])
    assert list(left) == ["id3"] and not left["id3"].deleted  # live documents stay
    assert "note" in store.collections() and "devices" not in store.collections()
    # a later write's cursor is above the horizon: devices that read it are not stale
    store.push([w("id9")], ME)
    assert store.get("note", ["id9"])["id9"].cursor > horizon


def test_a_rewritten_tombstone_is_not_purged(store):
    import datetime as dt

    store.push([w("a")], ME)
    store.push([w("a", deleted=True, unconditional=True)], ME)
    version = _version(store, "a")
    store.push([w("a", title="restored", base_version=version)], ME)  # live again
    cut = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    assert store.purge_tombstones("note", cut, 10) == 0
    assert store.get("note", ["a"])["a"].data["title"] == "restored"


def test_catch_up_never_misses_a_change_after_the_cursor(store):
    # catch_up (the first page of a collection in a sync) may repeat changes from a
    # window before the cursor, on stores whose commits become visible out of order;
    # it must never skip one after it, and each repeat carries its current version
    store.push([w(f"id{i}") for i in range(3)], ME)
    _, cursor = pull_all(store)
    store.push([w("id3"), w("id4")], ME)
    store.push([w("id0", title="edited", base_version=_version(store, "id0"))], ME)
    page = store.pull("note", cursor, 100, catch_up=True)
    got = {d.id: d for d in page.docs}
    assert {"id3", "id4", "id0"} <= set(got)
    assert got["id0"].data["title"] == "edited"
    for doc in page.docs:
        assert doc.version == _version(store, doc.id)
    # and it moves the cursor on: the next plain pull from there has nothing new
    rest, _ = pull_all(store, after=page.cursor)
    assert rest == []


def test_count_after_gives_the_size_of_what_is_left(store):
    from replicator.stores.base import Countable

    assert isinstance(store, Countable)
    assert store.count_after("note", None) == 0
    store.push([w(f"id{i}") for i in range(5)], ME)
    assert store.count_after("note", None) == 5
    page = store.pull("note", None, 2)
    # an estimate may count a few already read (same commit time), never fewer than left
    assert 3 <= store.count_after("note", page.cursor) <= 5
