"""Every feature on encrypted databases, each device under a key of its own: sync,
conflicts, snapshots published by one and restored by others (encrypted under other
keys, or plain), and the snapshot key is not the database key.

(Any test module runs on encrypted databases with ``REPLICATOR_TEST_SQLCIPHER=1``:
``conftest.open_test_database``.)"""

from __future__ import annotations

import peewee
import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from playhouse.sqlcipher_ext import SqlCipherDatabase

from replicator import DirectoryBlobStore, EmbeddedRemote, Replicator, SnapshotKey
from replicator.cipher import EncryptedDatabase
from replicator.errors import WrongDatabaseKeyError
from replicator.strategies.snapshot import Never
from tests.cipher.scan import markers_found
from tests.helpers import snapshot_rows
from tests.models import MODELS, Comment, Note

SNAPSHOT_KEY = SnapshotKey(bytes(range(32)))
MARK = "Fatima-Nhantumbo-visit-"


@pytest.fixture
def world(tmp_path):
    (tmp_path / "server").mkdir()
    (tmp_path / "dev").mkdir()
    remote = EmbeddedRemote(tmp_path / "server" / "remote.db")
    blobs = DirectoryBlobStore(tmp_path / "server" / "bucket")
    opened = []

    def make(name, key=None, *, passphrase=None, **kw):
        path = str(tmp_path / "dev" / f"{name}.db")
        if passphrase is not None:
            db = SqlCipherDatabase(path, passphrase=passphrase, pragmas={"foreign_keys": 1})
        elif key is None:
            db = peewee.SqliteDatabase(path, pragmas={"foreign_keys": 1})
        else:
            db = EncryptedDatabase(path, key=key, pragmas={"foreign_keys": 1})
        device = Replicator(db, MODELS, remote, blobs, SNAPSHOT_KEY, device_name=name, **kw)
        opened.append(device)
        return device

    yield make, tmp_path / "dev"
    for device in opened:
        device.database.close()


def fill(device, n, start=0):
    with device.bound():
        for i in range(start, start + n):
            Comment.create(note=Note.create(title=f"{MARK}{i}"), text=f"{MARK}c{i}")


def test_sync_and_conflicts_between_devices_under_different_keys(world):
    make, dev = world
    a = make("a", bytes(range(1, 33)), snapshot_strategy=Never())
    b = make("b", passphrase="b's own passphrase", snapshot_strategy=Never())
    fill(a, 5)
    a.sync()
    b.sync()
    assert snapshot_rows(a) == snapshot_rows(b)
    with a.bound():
        note = Note.select().order_by(Note.title).first()
        note.title = f"{MARK}by a"
        note.save()
    with b.bound():
        theirs = Note.get_by_id(note.id)
        theirs.title = f"{MARK}by b"
        theirs.save()
        Comment.delete().where(Comment.note == theirs.id).execute()
    a.sync()
    report = b.sync()
    assert report.conflicts  # resolved under the default strategy
    a.sync()
    assert snapshot_rows(a) == snapshot_rows(b)
    assert markers_found(dev, [MARK]) == []


@pytest.mark.parametrize("restorer", ["another key", "a passphrase", "plain"])
def test_a_snapshot_of_an_encrypted_device_restores_anywhere(world, restorer):
    make, dev = world
    a = make("a", bytes(range(1, 33)))
    fill(a, 40)
    published = a.sync().snapshot
    assert published is not None
    key = {"another key": bytes(range(2, 34)), "a passphrase": None, "plain": None}[restorer]
    b = make("b", key, passphrase="pass" if restorer == "a passphrase" else None)
    report = b.login()
    assert report.restored == published
    assert snapshot_rows(b) == snapshot_rows(a)
    assert b.installation_id != a.installation_id
    fill(b, 2, start=100)  # the restored device carries on
    b.sync()
    a.sync()
    assert snapshot_rows(a) == snapshot_rows(b)
    files = [p for p in dev.iterdir() if p.name.startswith(("a.db", ".a.db"))]
    assert markers_found(dev, [MARK], only=files) == []
    if restorer != "plain":
        assert markers_found(dev, [MARK]) == []
        b.database.close()
        with pytest.raises(WrongDatabaseKeyError):  # b's file is under b's key, not a's
            make("b", bytes(range(1, 33))).pending_count()


def test_an_encrypted_device_restores_a_plain_devices_snapshot_over_synced_data(world):
    make, dev = world
    plain = make("plain")
    fill(plain, 30)
    plain.sync()
    b = make("b", b"\x07" * 32, snapshot_strategy=Never())
    b.sync()  # b holds synced rows: the restore copies table by table (not the backup)
    fill(plain, 5, start=50)
    plain.sync()
    b.restore(force=True)
    assert snapshot_rows(b) == snapshot_rows(plain)
    assert markers_found(dev, [MARK], only=list(dev.glob("b.db*"))) == []
    assert [p.name for p in dev.iterdir() if p.name.startswith(".b.db")] == []
