"""Every peewee field type round-trips exactly through every remote.

A row written on one device and downloaded by another holds the same bytes and
the same SQLite storage class in every column, on the embedded store and on
Firestore (whose native types are richer than SQLite's). A value a store
cannot hold is rejected before upload with an error naming row and column.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid

import peewee
import pytest
from playhouse.sqlite_ext import JSONField

from replicator import SyncModel, UnsupportedValueError


class Kind(SyncModel):
    name = peewee.TextField(default="")

    class Meta:
        table_name = "kind"


class Everything(SyncModel):
    char = peewee.CharField(null=True)
    fixed = peewee.FixedCharField(max_length=4, null=True)
    text = peewee.TextField(null=True)
    small = peewee.SmallIntegerField(null=True)
    integer = peewee.IntegerField(null=True)
    big = peewee.BigIntegerField(null=True)
    real = peewee.FloatField(null=True)
    double = peewee.DoubleField(null=True)
    dec = peewee.DecimalField(max_digits=30, decimal_places=10, null=True)
    flag = peewee.BooleanField(null=True)
    when = peewee.DateTimeField(null=True)
    day = peewee.DateField(null=True)
    clock = peewee.TimeField(null=True)
    stamp = peewee.TimestampField(null=True, utc=True)
    blob = peewee.BlobField(null=True)
    uid = peewee.UUIDField(null=True)
    ip = peewee.IPField(null=True)
    doc = JSONField(null=True)
    kind = peewee.ForeignKeyField(Kind, null=True, on_delete="SET NULL")

    class Meta:
        table_name = "everything"


MODELS = [Kind, Everything]
UTC2 = _dt.timezone(_dt.timedelta(hours=2))

ROWS = [
    {},  # every column null
    {
        "char": "ümlaut ✓ \x00 nul",
        "fixed": "abcd",
        "text": "line\nbreak" * 1000,
        "small": -32768,
        "integer": 2**31 - 1,
        "big": 2**63 - 1,
        "real": 0.1,
        "double": -1.5e300,
        "dec": decimal.Decimal("12345678901234567890.0123456789"),
        "flag": True,
        "when": _dt.datetime(2026, 1, 2, 3, 4, 5, 678901),
        "day": _dt.date(1999, 12, 31),
        "clock": _dt.time(23, 59, 59, 999999),
        "stamp": _dt.datetime(2026, 1, 2, 3, 4, 5),
        "blob": bytes(range(256)),
        "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "ip": "192.168.1.254",
        "doc": {"a": [1, 2.5, None, True], "nested": {"k": "v"}, "big": 2**62},
    },
    {
        "big": -(2**63),
        "real": -0.0,
        "dec": decimal.Decimal("0.0000000001"),
        "flag": False,
        "when": _dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC2),  # aware: kept as written
        "blob": b"",
        "text": "",
        "doc": [],
    },
    {"when": _dt.datetime(2026, 6, 1, 12, 0, 0), "doc": "just a string", "integer": 0},
]


def _raw(device, row_id):
    cols = [f.column_name for f in Everything._meta.sorted_fields]
    sql = ", ".join(f'"{c}", typeof("{c}")' for c in cols)
    values = device.database.execute_sql(
        f"SELECT {sql} FROM everything WHERE id = ?", (row_id,)
    ).fetchone()
    skip = {"isDirty", "serverId", "syncRev"}
    return {c: values[2 * i : 2 * i + 2] for i, c in enumerate(cols) if c not in skip}


def test_every_field_type_round_trips_byte_for_byte(make_device, remote):
    a = make_device("a", models=MODELS)
    b = make_device("b", models=MODELS)
    ids = []
    with a.bound():
        kind = Kind.create(name="k")
        for values in ROWS:
            ids.append(Everything.create(kind=kind if values else None, **values).id)
    a.sync()
    report = b.sync()
    assert report.set_aside == () and report.rejected == ()
    for row_id in ids:
        assert _raw(b, row_id) == _raw(a, row_id)
    # and back: an edit on b goes up and down again without changing anything else
    with b.bound():
        Everything.update(text="edited on b").where(Everything.id == ids[1]).execute()
    b.sync()
    a.sync()
    for row_id in ids:
        mine, theirs = _raw(a, row_id), _raw(b, row_id)
        assert mine == theirs


def test_a_value_the_store_cannot_hold_is_rejected_before_upload(make_device, remote):
    a = make_device("a", models=MODELS)
    with a.bound():
        fine = Everything.create(doc={"n": 1})
        huge = Everything.create(doc={"n": 10**30})
    report = a.sync()
    if not getattr(remote, "native_types", False):
        assert report.rejected == ()  # JSON text holds any integer
        return
    [rejected] = report.rejected
    assert rejected.id == huge.id and isinstance(rejected.error, UnsupportedValueError)
    assert "everything" in str(rejected.error) and "doc" in str(rejected.error)
    assert fine.id in remote.all_docs("everything")
    assert huge.id not in remote.all_docs("everything")
    assert a.dirty_counts()["everything"] == 1  # kept, dirty, until fixed
    with a.bound():
        Everything.update(doc={"n": 10**6}).where(Everything.id == huge.id).execute()
    assert a.sync().rejected == ()


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_aware_datetimes_keep_their_offset_in_the_codec(remote):
    from replicator.codec import from_native, to_native

    text = "2026-06-01 12:00:00+02:00"
    assert from_native(Everything, to_native(Everything, {"when": text})) == {"when": text}


def test_every_field_type_round_trips_through_a_bundle_and_the_ingestor(
    make_device, remote, tmp_path
):
    """Upload-only on the collector: bundle → ingestor → remote → the reader's download."""
    from replicator import Bundles, DirectoryBlobStore, HttpIngest, Ingestor

    blobs = DirectoryBlobStore(tmp_path / "bucket")
    writer = make_device("writer", models=MODELS)  # the parent rows, synced normally
    with writer.bound():
        kind = Kind.create(name="k")
    writer.sync()
    with Ingestor(blobs, remote, [Everything]).serve() as server:
        a = make_device(
            "a",
            models=MODELS,
            bundles=Bundles(blobs, HttpIngest(server.url), [Everything]),
            download_only=[Kind],
        )
        a.sync()
        ids = []
        with a.bound():
            for values in ROWS:
                ids.append(Everything.create(kind=kind.id if values else None, **values).id)
        report = a.sync()
    assert report.bundled == {"everything": len(ROWS)} and not report.refused
    b = make_device("b", models=MODELS)
    report = b.sync()
    assert report.set_aside == () and report.rejected == ()
    for row_id in ids:  # (the collector never learns the remote's version: it never pulls;
        # createdOn is the service's: when it first took the row)
        same = {"syncVersion": None, "createdOn": None}
        assert {**_raw(b, row_id), **same} == {**_raw(a, row_id), **same}
