"""FirestoreRemote specifics, on the official emulator: types, limits, retries, outages."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import threading
import time

import peewee
import pytest
from playhouse.sqlite_ext import JSONField

from replicator import ConfigurationError, DocumentTooLargeError, OfflineError, SyncModel
from replicator.testing import FaultyRemote
from tests.helpers import FIRESTORE_PROJECT, make_firestore_remote, snapshot_rows
from tests.models import Comment, Note

pytestmark = pytest.mark.usefixtures("firestore_emulator")


@pytest.fixture
def remote(firestore_client):
    """This module is about Firestore only: make_device's default store."""
    return make_firestore_remote(firestore_client)


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Typed(SyncModel):
    when = peewee.DateTimeField(null=True)
    day = peewee.DateField(null=True)
    price = peewee.DecimalField(max_digits=12, decimal_places=4, null=True)
    blob = peewee.BlobField(null=True)
    flag = peewee.BooleanField(default=False)
    ratio = peewee.FloatField(null=True)
    # canonical JSON text (sorted keys, no spaces) is what converts back exactly, so
    # it travels as a Firestore map; other JSON text travels as text
    meta = JSONField(default=dict, json_dumps=canonical_json)
    notes = JSONField(default=dict)

    class Meta:
        table_name = "typed"


def test_types_map_to_native_firestore_values_and_back(make_device, firestore_client):
    store = make_firestore_remote(firestore_client)
    a = make_device("a", store=store, models=[Typed])
    b = make_device("b", store=store, models=[Typed])
    with a.bound():
        row = Typed.create(
            when=dt.datetime(2026, 3, 4, 5, 6, 7, 891011),
            day=dt.date(2026, 3, 4),
            price=decimal.Decimal("12.3456"),
            blob=b"\x00\x01\xff",
            flag=True,
            ratio=0.25,
            meta={"tags": ["x", "y"], "n": 3},
            notes={"b": 1, "a": 2},
        )
    a.sync()
    raw = firestore_client.document(f"users/test-user/typed/{row.id}").get().to_dict()
    assert raw["when"] == dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.timezone.utc)
    assert raw["updatedOn"].tzinfo is not None  # sync columns are timestamps too
    assert raw["flag"] is True and raw["blob"] == b"\x00\x01\xff"
    assert raw["meta"] == {"tags": ["x", "y"], "n": 3}  # a map, not JSON text
    assert raw["notes"] == '{"b":1,"a":2}'  # keys unsorted: would not convert back exactly
    assert raw["price"] == "12.3456" and raw["day"] == "2026-03-04"
    assert raw["deleted"] is False and "changedAt" in raw
    b.sync()
    ra, rb = snapshot_rows(a, [Typed])["typed"], snapshot_rows(b, [Typed])["typed"]
    assert ra == rb  # byte for byte
    with b.bound():
        got = Typed.get_by_id(row.id)
        assert got.when == dt.datetime(2026, 3, 4, 5, 6, 7, 891011)
        assert got.price == decimal.Decimal("12.3456") and got.meta["tags"] == ["x", "y"]


def test_document_over_one_mib_is_rejected_before_upload(make_device, firestore_client):
    store = make_firestore_remote(firestore_client)
    a = make_device("a", store=store)
    with a.bound():
        big = Note.create(title="big", body="x" * 1_100_000)
        ok = Note.create(title="small")
    report = a.sync()
    assert [type(r.error) for r in report.rejected] == [DocumentTooLargeError]
    assert report.rejected[0].id == big.id
    assert set(store.all_docs("note")) == {ok.id}
    assert a.dirty_counts()["note"] == 1


def test_aborted_commit_is_retried(make_device, firestore_client):
    store = make_firestore_remote(firestore_client)
    a = make_device("a", store=store)
    with a.bound():
        note = Note.create(title="v1")
    a.sync()
    with a.bound():
        Note.update(title="v2").where(Note.id == note.id).execute()
    # another client holds the document in a transaction: the emulator aborts our
    # commit with "lock timeout" until the transaction ends
    tx = firestore_client.transaction()
    tx._begin()
    ref = firestore_client.document(f"users/test-user/note/{note.id}")
    ref.get(transaction=tx)
    timer = threading.Timer(2.5, tx._rollback)
    timer.start()
    try:
        a.sync()
    finally:
        timer.join()
    assert store.retries >= 1
    assert store.all_docs("note")[note.id].data["title"] == "v2"


def test_emulator_stopped_mid_sync_raises_offline_and_changes_nothing(make_device, tmp_path):
    from google.cloud import firestore

    from replicator.testing import FirestoreEmulator, find_jar

    # an emulator of its own, so pausing it disturbs no other test
    emulator = FirestoreEmulator(find_jar()).start()
    try:
        saved = os.environ["FIRESTORE_EMULATOR_HOST"]
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
        try:
            client = firestore.Client(project=FIRESTORE_PROJECT)
            store = make_firestore_remote(client, timeout=1.5, attempts=2)
            a = make_device("a", store=make_firestore_remote(client))
            with a.bound():
                for i in range(4):
                    Comment.create(note=Note.create(title=f"n{i}"), text=f"c{i}")
            a.sync()
            faulty = FaultyRemote(store)
            b = make_device("b", store=faulty, page_size=2)
            with b.bound():
                Note.create(title="b's own")
            pulls = {"n": 0}

            def stop_the_server(collection, *args, **kwargs):
                pulls["n"] += 1
                if pulls["n"] == 3:
                    emulator.pause()

            faulty.hooks["pull"] = stop_the_server
            before = list(b.database.connection().iterdump())
            started = time.monotonic()
            with pytest.raises(OfflineError):
                b.sync()
            assert time.monotonic() - started < 30  # bounded, not minutes of retries
            after = list(b.database.connection().iterdump())
            # pages committed before the outage stay; nothing else changed
            assert b.dirty_counts()["note"] == 1
            assert len(after) >= len(before)
            emulator.resume()
            faulty.hooks.clear()
            b.sync()
            a.sync()
            assert snapshot_rows(a) == snapshot_rows(b)
        finally:
            os.environ["FIRESTORE_EMULATOR_HOST"] = saved
    finally:
        emulator.stop()


def test_root_must_be_a_document_path(firestore_client):
    from replicator.stores.firestore import FirestoreRemote

    with pytest.raises(ConfigurationError, match="users/<uid>"):
        FirestoreRemote(firestore_client, root="users")


@pytest.mark.parametrize("bad_id", ["", "a/b", ".", "__x__"])
def test_a_push_naming_a_document_by_no_row_id_writes_nothing(remote, bad_id):
    """Called directly (the upload reports such rows first), the store refuses with a
    typed error before the commit, instead of the client's ValueError or an invented id."""
    from replicator import UnsupportedValueError
    from replicator.stores.base import DeviceRecord, Write

    good = Write("note", "fine", {"id": "fine", "title": "t"})
    bad = Write("note", bad_id, {"id": bad_id, "title": "t"})
    with pytest.raises(UnsupportedValueError, match="cannot name a Firestore document"):
        remote.push([good, bad], DeviceRecord("dev-1"))
    assert remote.all_docs("note") == {}
