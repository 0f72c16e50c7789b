"""Every read and write the engine makes on a device passes the generated rules.

Devices act as their signed-in users, each with its own session, under the rules
``replicator rules`` generates for their models, through the TokenGate: download
(with the horizons read), upload batches, tombstones, registration, reference data,
a snapshot's generation record, the purge of expired tombstones, and the requests
of the ingest queue. The only admin is the service, which publishes reference data
and ingests bundles, as it does in production.
"""

from __future__ import annotations

import datetime as dt
import time

import peewee

from replicator import (
    Always,
    Bundles,
    DirectoryBlobStore,
    Ingestor,
    Replicator,
    SnapshotKey,
    StoreIngest,
)
from replicator.stores.firestore import FirestoreRemote
from tests.campaign_models import FormSchema, Household
from tests.helpers import snapshot_rows
from tests.models import Comment, Note

MODELS = [Note, Comment, FormSchema, Household]
SYNCED = [Note, Comment, FormSchema]
RETENTION = dt.timedelta(seconds=2)


def test_every_call_a_device_makes_passes_the_rules(tmp_path, as_users):
    users = as_users(
        MODELS,
        download_only=["form_schemas"],
        upload_only=["households"],
        ingest_queue=True,
        retention=RETENTION,
    )
    service = FirestoreRemote(users.service_client(), "users/alice")  # admin: a server
    key, bucket = SnapshotKey.generate(), DirectoryBlobStore(tmp_path / "bucket")

    def device(name, **kw):
        remote = users.remote("alice")  # each device signs in on its own
        db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
        bundles = Bundles(bucket, StoreIngest(remote), [Household])
        return Replicator(
            db, MODELS, remote, DirectoryBlobStore(tmp_path / "snapshots"), key,
            device_name=name, download_only=[FormSchema], bundles=bundles,
            tombstone_retention=RETENTION, **kw,
        )  # fmt: skip

    service_db = peewee.SqliteDatabase(str(tmp_path / "service.db"))
    publisher = Replicator(service_db, [FormSchema], service, device_name="svc")
    with publisher.bound():
        FormSchema.create(form="visit", version=1, schema="{}")
    publisher.sync()

    phone = device("phone", snapshot_strategy=Always())
    with phone.bound():
        note = Note.create(title="shopping")
        Comment.create(note=note, text="eggs")
        gone = Note.create(title="to delete")
        Household.create(head="Ana", members=3)
    assert phone.sync().bundles_waiting == 1  # upload, register, the bundle's request
    ingestor = Ingestor(bucket, service, [Household], name="svc")
    assert [r.state for r in ingestor.poll()] == ["accepted"]
    answered = phone.sync()  # reads the answer; a snapshot and its generation record
    assert answered.bundled == {"households": 1}
    assert answered.snapshot is not None and answered.snapshot_error is None

    laptop = device("laptop")
    restored = laptop.login()  # from the snapshot, then what it lacks
    assert restored.restored is not None
    with laptop.bound():
        assert FormSchema.select().count() == 1  # reference data came down
        Note.update(body="from the laptop").where(Note.id == note.id).execute()
    with phone.bound():
        Note.update(title="groceries").where(Note.id == note.id).execute()
        Note.delete().where(Note.id == gone.id).execute()
    phone.sync()
    laptop.sync()  # a conflict, resolved and uploaded
    phone.sync()
    assert snapshot_rows(phone, SYNCED) == snapshot_rows(laptop, SYNCED)

    time.sleep(RETENTION.total_seconds() + 0.5)
    with laptop.bound():
        Comment.create(note=note, text="milk")
    report = laptop.sync()  # purges the expired tombstone, raising the horizons
    assert report.purge_error is None and report.purged == {"note": 1}
    assert phone.sync().downloaded == {"comment": 1}  # past the horizons read
    assert users.gate.refused == {}
    assert set(users.gate.users) == {"alice"}
    devices = {d.name: d for d in users.remote("alice").devices()}
    assert devices["phone"].snapshot_generation >= 1  # the generation record went through
