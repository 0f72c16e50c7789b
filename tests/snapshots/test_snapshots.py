"""Encrypted snapshots: Big Brother publishing, restore on login, and every way a restore can fail.

Blob stores: a directory, S3 (moto in server mode over a real socket) and SeaweedFS.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from replicator import (
    EmbeddedRemote,
    SnapshotKey,
)
from replicator.errors import (
    SnapshotNotFoundError,
    TamperedSnapshotError,
    TruncatedSnapshotError,
    UnsafeRestoreError,
    UnsupportedSnapshotError,
    WrongKeyError,
)
from replicator.snapshots.crypto import MAGIC, Passphrase
from replicator.snapshots.manifest import MANIFEST, read_manifest
from replicator.strategies.snapshot import Never
from tests.helpers import ROOT, run_script, snapshot_rows
from tests.models import Comment, Note

KEY = SnapshotKey(bytes(range(32)))
SECRET = "very-secret-title-4242"


@pytest.fixture
def remote(tmp_path):
    """Snapshot tests vary the blob store; the remote is the embedded one."""
    return EmbeddedRemote(tmp_path / "remote.db")


def fill(device, n=20, title=SECRET):
    with device.bound():
        for i in range(n):
            Comment.create(note=Note.create(title=f"{title}-{i}"), text=f"comment {i}")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restore_then_catch_up_downloads_only_post_snapshot_changes(make_device, blobs):
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 30)
    first = a.sync()
    assert first.snapshot is not None
    b = make_device("b", blobs=blobs, key=KEY, snapshot_strategy=Never())
    b.sync()
    fill(b, 3, title="after the snapshot")
    b.sync()
    c = make_device("c", blobs=blobs, key=KEY)
    progress = []
    c.on_progress = progress.append
    report = c.login()
    assert report.restored == first.snapshot
    assert report.downloaded == {"note": 3, "comment": 3}
    assert report.usage.reads < 15  # not the 66 documents a restore-less start reads
    assert any(p.phase == "restore" and p.done > 0 for p in progress)
    a.sync()
    assert snapshot_rows(c) == snapshot_rows(a) == snapshot_rows(b)
    assert c.installation_id not in (a.installation_id, b.installation_id)


def test_snapshot_holds_no_plaintext(make_device, blobs, tmp_path):
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 5)
    a.sync()
    manifest = read_manifest(blobs)
    out = io.BytesIO()
    blobs.get(manifest.key, out)
    data = out.getvalue()
    assert SECRET.encode() not in data
    assert b"SQLite format 3" not in data
    assert a.installation_id.encode() not in data
    # the plaintext temporary files are gone too
    assert not [p for p in tmp_path.glob(".a.db.*")]


def test_device_identity_does_not_travel(make_device, blobs):
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 2)
    a.sync()
    c = make_device("c", blobs=blobs, key=KEY)
    c.login()
    assert c.installation_id != a.installation_id
    assert c.local.device_name == "c"
    with c.bound():
        assert Note.select().count() == 2


def writers(device):
    """Who the triggers named as the writer of each row and delete."""
    db = device.database
    rows = db.execute_sql('SELECT "updatedBy" FROM note WHERE "isDirty" = 1').fetchall()
    tombs = db.execute_sql("SELECT deleted_by FROM replicator_tombstones WHERE pending = 1")
    return {r[0] for r in rows} | {r[0] for r in tombs.fetchall()}


@pytest.mark.parametrize("into", ["an empty database", "a database of synced data"])
def test_a_restored_device_stamps_its_writes_with_its_own_id(make_device, blobs, into):
    """The capture triggers name the writer by a literal id: a restore, which gives the
    database a new identity, restamps them (snapshot triggers carry the publisher's)."""
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 3)
    a.sync()
    c = make_device("c", blobs=blobs, key=KEY, snapshot_strategy=Never())
    if into == "an empty database":
        c.login()
    else:
        c.sync()
        c.restore(force=True)
    with c.bound():
        Note.create(title="new on c")
        Note.update(title="edited on c").where(Note.title == f"{SECRET}-0").execute()
        Comment.delete().where(Comment.text == "comment 1").execute()
    assert writers(c) == {c.installation_id} != {a.installation_id}


def test_a_device_behind_or_dirty_never_publishes(make_device, blobs):
    a = make_device("a", blobs=blobs, key=KEY)
    b = make_device("b", blobs=blobs, key=KEY)
    fill(a, 2)
    assert a.sync().snapshot is not None
    assert b.sync().snapshot is None  # same data as the snapshot: not strictly newer
    fill(b, 1)
    b.remote.usage  # noqa: B018 - b uploads; its watermarks then pass a's
    published = b.sync().snapshot
    assert published is not None
    manifest = read_manifest(blobs)
    assert manifest.snapshot_id == published
    # a is behind now; syncing catches it up but never past b: no publish
    assert a.sync().snapshot is None


class _Eager:
    """A careless app strategy: publish every time, dirty rows or not."""

    def should_publish(self, decision):
        return True


@pytest.mark.parametrize("strategy", [None, _Eager()], ids=["default", "careless-strategy"])
def test_a_sync_that_leaves_rows_dirty_never_publishes(make_device, blobs, tmp_path, strategy):
    # the sync succeeds, but a row too large for the store stays dirty: a snapshot now
    # would hold a row no other device can have, and a restore would take it for synced.
    # The engine enforces it whatever the strategy says.
    store = EmbeddedRemote(tmp_path / "small-docs.db", max_document_bytes=2_000)
    extra = {} if strategy is None else {"snapshot_strategy": strategy}
    a = make_device("a", store=store, blobs=blobs, key=KEY, **extra)
    fill(a, 2)
    with a.bound():
        Note.create(title="too large", body="x" * 5_000)
    report = a.sync()
    assert report.total_uploaded == 4 and len(report.rejected) == 1
    assert a.dirty_counts()["note"] == 1
    assert report.snapshot is None and report.snapshot_error is None
    assert read_manifest(blobs) is None
    with a.bound():
        Note.delete().where(Note.title == "too large").execute()
    assert a.sync().snapshot is not None  # nothing dirty any more: it publishes


class _RacingBlobs:
    """Lets another device publish right before this one swaps the manifest."""

    def __init__(self, inner, before_manifest):
        self.inner, self.before_manifest = inner, before_manifest

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put(self, key, source, **kw):
        if key == MANIFEST and self.before_manifest is not None:
            hook, self.before_manifest = self.before_manifest, None
            hook()
        return self.inner.put(key, source, **kw)


def test_racing_publishers_the_older_never_wins(make_device, blobs):
    old = make_device("old", blobs=blobs, key=KEY)
    new = make_device("new", blobs=blobs, key=KEY, snapshot_strategy=Never())
    fill(old, 2)
    old.sync()
    new.sync()
    fill(new, 2)
    new.sync()  # new holds more data than the current snapshot
    fill(old, 1)  # old gets something too, but will be behind new

    def newer_publishes():
        from replicator.strategies.snapshot import BigBrother

        new.snapshot_strategy = BigBrother()
        new.sync()
        assert read_manifest(blobs).device_name == "new"

    old.blobs = _RacingBlobs(blobs, newer_publishes)
    report = old.sync()
    # old decided to publish, but new swapped the manifest first with data at least
    # as fresh: old's conditional write failed, it re-read, and skipped
    assert report.snapshot is None
    manifest = read_manifest(blobs)
    assert manifest.device_name == "new"
    kept = {i.key for i in blobs.list("snapshots/") if i.key.endswith(".snap")}
    assert kept == {f"snapshots/{s}.snap" for s in manifest.history}  # old's upload is gone
    c = make_device("c", blobs=blobs, key=KEY)
    c.login()
    assert snapshot_rows(c) == snapshot_rows(new)


@pytest.mark.parametrize("damage", ["flip", "truncate", "flip-and-rehash", "version"])
def test_damaged_snapshot_is_refused_and_the_database_untouched(
    make_device, blobs, tmp_path, damage
):
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 5)
    a.sync()
    manifest = read_manifest(blobs)
    out = io.BytesIO()
    blobs.get(manifest.key, out)
    data = bytearray(out.getvalue())
    if damage.startswith("flip"):
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-100:]
    else:
        data = bytearray(MAGIC + (99).to_bytes(2, "big") + bytes(data[10:]))
    blobs.put(manifest.key, io.BytesIO(bytes(data)))
    if damage in ("flip-and-rehash", "version"):
        # a consistent checksum, so only the AEAD (or the version check) can catch it
        import attrs

        # re-signed with the key (a holder of the key, or a newer replicator), so
        # that only the AEAD (or the version check) can catch it
        fixed = attrs.evolve(
            manifest, sha256=hashlib.sha256(bytes(data)).hexdigest(), size=len(data)
        ).signed(KEY)
        blobs.put(MANIFEST, io.BytesIO(fixed.to_json()))
    c = make_device("c", blobs=blobs, key=KEY)
    before = file_digest(tmp_path / "c.db")
    expected = {
        "flip": TamperedSnapshotError,
        "truncate": TruncatedSnapshotError,
        "flip-and-rehash": TamperedSnapshotError,
        "version": UnsupportedSnapshotError,
    }[damage]
    with pytest.raises(expected) as info:
        c.restore()
    assert info.value.hint
    assert file_digest(tmp_path / "c.db") == before
    assert not [p for p in tmp_path.glob(".c.db.*")]


def test_wrong_key_and_wrong_passphrase(make_device, blobs, tmp_path):
    a = make_device("a", blobs=blobs, key=Passphrase("correct horse battery staple"))
    fill(a, 3)
    a.sync()
    assert blobs.head("snapshots/kdf.json") is not None  # the salt lives beside the snapshots
    wrong = make_device("wrong", blobs=blobs, key=Passphrase("incorrect horse"))
    before = file_digest(tmp_path / "wrong.db")
    with pytest.raises(WrongKeyError, match="passphrase"):
        wrong.restore()
    assert file_digest(tmp_path / "wrong.db") == before
    raw = make_device("raw", blobs=blobs, key=KEY)
    with pytest.raises(WrongKeyError):
        raw.restore()
    right = make_device("right", blobs=blobs, key=Passphrase("correct horse battery staple"))
    report = right.login()
    assert report.restored is not None
    assert snapshot_rows(right) == snapshot_rows(a)


def test_missing_snapshot_and_unsafe_restore(make_device, blobs):
    a = make_device("a", blobs=blobs, key=KEY)
    with pytest.raises(SnapshotNotFoundError):
        a.restore()
    assert a.login().restored is None  # the first device simply syncs
    fill(a, 1)
    a.sync()
    b = make_device("b", blobs=blobs, key=KEY)
    with b.bound():
        Note.create(title="unsynced")
    with pytest.raises(UnsafeRestoreError, match="unsynced"):
        b.restore()
    b.sync()
    with pytest.raises(UnsafeRestoreError, match="force"):
        b.restore()
    manifest = read_manifest(blobs)
    blobs.delete(manifest.key)
    c = make_device("c", blobs=blobs, key=KEY)
    with pytest.raises(SnapshotNotFoundError, match="missing"):
        c.restore()


def test_restored_row_without_server_id_is_not_uploaded_twice(make_device, blobs, remote):
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 1)
    a.sync()
    c = make_device("c", blobs=blobs, key=KEY)
    c.login()
    # an older snapshot format kept rows dirty and unconfirmed: the seed's fallback case
    c.local.db.execute_sql("UPDATE replicator_control SET applying = 1")
    c.database.execute_sql('UPDATE note SET "isDirty" = 1, "serverId" = NULL')
    c.local.db.execute_sql("UPDATE replicator_control SET applying = 0")
    c.database.execute_sql("DELETE FROM replicator_base")
    report = c.sync()
    assert report.conflicts == ()
    assert len(remote.all_docs("note")) == 1
    assert c.dirty_counts()["note"] == 0


RESTORE_AND_DIE = """
import os, sys, peewee
sys.path.insert(0, sys.argv[3])
from replicator import EmbeddedRemote, Replicator, SnapshotKey
from tests.models import MODELS
from replicator.stores.directory import DirectoryBlobStore
db = peewee.SqliteDatabase(sys.argv[1])
r = Replicator(db, MODELS, EmbeddedRemote(sys.argv[2] + "/remote.db"),
               DirectoryBlobStore(sys.argv[2] + "/blobs"), SnapshotKey(bytes(range(32))))
def die(progress):
    if progress.phase == "restore" and progress.done > 0:
        os._exit(9)
r.on_progress = die
r.restore()
"""


def test_process_killed_during_restore_leaves_the_database_intact(make_device, tmp_path):
    from replicator.stores.directory import DirectoryBlobStore

    blobs = DirectoryBlobStore(tmp_path / "blobs")
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 10)
    a.sync()
    victim = make_device("victim", blobs=blobs, key=KEY)
    victim.database.close()
    before = file_digest(tmp_path / "victim.db")
    proc = run_script(RESTORE_AND_DIE, tmp_path / "victim.db", tmp_path, ROOT)
    assert proc.returncode == 9, proc.stderr
    assert file_digest(tmp_path / "victim.db") == before
    victim.database.connect()
    assert victim.login().restored is not None  # and leftovers are cleaned on the way
    assert not [p for p in tmp_path.glob(".victim.db.*")]
    assert snapshot_rows(victim) == snapshot_rows(a)
    assert os.path.exists(tmp_path / "victim.db")


def test_restore_over_firestore_downloads_only_what_is_new(make_device, firestore_client, blobs):
    from tests.helpers import make_firestore_remote

    store = make_firestore_remote(firestore_client)
    a = make_device("a", store=store, blobs=blobs, key=KEY)
    fill(a, 10)
    assert a.sync().snapshot is not None
    b = make_device("b", store=make_firestore_remote(firestore_client), snapshot_strategy=Never())
    b.sync()
    fill(b, 2, title="later")
    b.sync()
    c = make_device("c", store=make_firestore_remote(firestore_client), blobs=blobs, key=KEY)
    report = c.login()
    assert report.restored is not None
    assert report.downloaded == {"note": 2, "comment": 2}
    a.sync()
    assert snapshot_rows(c) == snapshot_rows(a)


def test_big_brother_min_changes_and_interval(make_device, blobs):
    import datetime as dt

    from replicator import BigBrother

    a = make_device("a", blobs=blobs, key=KEY, snapshot_strategy=BigBrother(min_changes=10))
    fill(a, 2)  # 4 rows: a first snapshot needs no minimum
    first = a.sync().snapshot
    assert first is not None
    fill(a, 2)
    assert a.sync().snapshot is None  # 4 rows moved since: under 10
    fill(a, 3)
    assert a.sync().snapshot is not None  # 10 rows now
    b = make_device(
        "b", blobs=blobs, key=KEY, snapshot_strategy=BigBrother(min_interval=dt.timedelta(hours=1))
    )
    fill(b, 1)
    assert b.sync().snapshot is None  # fresher, but the last snapshot is minutes old
