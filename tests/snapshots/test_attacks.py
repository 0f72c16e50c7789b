"""An attacker with write access to the bucket cannot bend a restore or weaken the key.

Each attack the issue found is replayed here: the manifest pointed at an older
snapshot with the newest watermarks, inflated watermarks, a consistent older
manifest and snapshot replayed, passphrase parameters downgraded, a garbage
creation time, and a publish killed part-way. Every one ends in a typed
``SnapshotError`` with the local database byte-identical, or (for the
publisher) in a refused publish that leaves the sync itself successful.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import attrs
import pytest

from replicator import EmbeddedRemote, Passphrase, SnapshotKey, TamperedSnapshotError
from replicator.snapshots.manifest import KDF, MANIFEST, read_manifest
from tests.helpers import ROOT, run_script
from tests.models import Note

KEY = SnapshotKey(bytes(range(7, 39)))


@pytest.fixture
def remote(tmp_path):
    return EmbeddedRemote(tmp_path / "remote.db")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _notes(device, n, prefix="n"):
    with device.bound():
        for i in range(n):
            Note.create(title=f"{prefix}{i}")


def _raw_manifest(blobs) -> dict:
    out = io.BytesIO()
    blobs.get(MANIFEST, out)
    return json.loads(out.getvalue())


def _put_manifest(blobs, data: dict) -> None:
    blobs.put(MANIFEST, io.BytesIO(json.dumps(data).encode()))


def _two_snapshots(make_device, blobs):
    """Device a publishes twice (2 notes, then 1503): return a and both manifests."""
    a = make_device("a", blobs=blobs, key=KEY)
    _notes(a, 2, "old")
    a.sync()
    old = read_manifest(blobs, KEY)
    _notes(a, 1501, "new")
    a.sync()
    new = read_manifest(blobs, KEY)
    assert new.snapshot_id != old.snapshot_id and old.snapshot_id in new.history
    return a, old, new


def _refused(make_device, blobs, tmp_path, name="victim", key=KEY):
    victim = make_device(name, blobs=blobs, key=key)
    path = tmp_path / f"{name}.db"
    before = _digest(path)
    with pytest.raises(TamperedSnapshotError) as info:
        victim.login()
    assert _digest(path) == before
    return info.value


def test_manifest_pointed_at_an_older_snapshot_with_the_newest_watermarks(
    make_device, blobs, tmp_path
):
    _a, old, new = _two_snapshots(make_device, blobs)
    forged = _raw_manifest(blobs)
    forged.update(latest=old.snapshot_id, key=old.key, sha256=old.sha256, size=old.size)
    _put_manifest(blobs, forged)
    assert "authentication" in str(_refused(make_device, blobs, tmp_path))
    # even re-signed by someone holding the key, manifest and snapshot must agree
    resigned = attrs.evolve(new, key=old.key, sha256=old.sha256, size=old.size)
    resigned = attrs.evolve(resigned, snapshot_id=old.snapshot_id).signed(KEY)
    blobs.put(MANIFEST, io.BytesIO(resigned.to_json()))
    assert "do not belong together" in str(_refused(make_device, blobs, tmp_path, "v2"))


def test_inflated_watermarks_are_refused(make_device, blobs, tmp_path):
    _two_snapshots(make_device, blobs)
    forged = _raw_manifest(blobs)
    forged["watermarks"] = {k: "9" * 20 for k in forged["watermarks"]}
    _put_manifest(blobs, forged)
    _refused(make_device, blobs, tmp_path)


def test_a_replayed_older_manifest_and_snapshot_are_refused(make_device, blobs, tmp_path):
    _a, old, _new = _two_snapshots(make_device, blobs)
    blobs.put(MANIFEST, io.BytesIO(old.to_json()))  # a consistent, validly signed old pair
    err = _refused(make_device, blobs, tmp_path)
    assert "rolled back" in str(err)


def test_a_downgraded_kdf_json_is_never_used(make_device, blobs, tmp_path):
    phrase = Passphrase("correct horse battery staple")
    a = make_device("a", blobs=blobs, key=phrase)
    _notes(a, 3)
    first = a.sync().snapshot
    assert first is not None
    out = io.BytesIO()
    blobs.get(KDF, out)
    weak = {**json.loads(out.getvalue()), "n": 2, "r": 1}
    weak.pop("kcv", None)
    blobs.put(KDF, io.BytesIO(json.dumps(weak).encode()))
    _notes(a, 3, "more")
    report = a.sync()  # the data syncs; the snapshot is refused, and said so
    assert report.snapshot is None and isinstance(report.snapshot_error, TamperedSnapshotError)
    assert "below the floor" in str(report.snapshot_error)
    assert read_manifest(blobs).snapshot_id == first
    err = _refused(make_device, blobs, tmp_path, key=phrase)
    assert "below the floor" in str(err)


def test_a_garbage_creation_time_is_refused_and_healed_by_the_next_publish(
    make_device, blobs, tmp_path
):
    a = make_device("a", blobs=blobs, key=KEY)
    _notes(a, 3)
    a.sync()
    forged = _raw_manifest(blobs)
    forged["created"] = "yesterday-ish"
    _put_manifest(blobs, forged)
    _refused(make_device, blobs, tmp_path)
    _notes(a, 1, "later")
    report = a.sync()  # never fails the sync: the unusable manifest is replaced
    assert report.snapshot is not None and report.snapshot_error is None
    fresh = make_device("fresh", blobs=blobs, key=KEY)
    assert fresh.login().restored == report.snapshot


PUBLISH_AND_DIE = """
import os, sys, peewee
sys.path.insert(0, sys.argv[3])
from replicator import Always, EmbeddedRemote, Replicator, SnapshotKey
from tests.models import MODELS, Note
from replicator.stores.directory import DirectoryBlobStore
db = peewee.SqliteDatabase(sys.argv[1])
r = Replicator(db, MODELS, EmbeddedRemote(sys.argv[2] + "/remote.db"),
               DirectoryBlobStore(sys.argv[2] + "/blobs"), SnapshotKey(bytes(range(7, 39))),
               snapshot_strategy=Always())
with r.bound():
    for i in range(2000):
        Note.create(title="x" * 200)
def die(progress):
    if progress.phase == "snapshot" and progress.done > 0:
        os._exit(9)
r.on_progress = die
r.sync()
"""


def test_a_publish_killed_part_way_leaves_nothing_after_the_next_start(make_device, tmp_path):
    from replicator.stores.directory import DirectoryBlobStore

    proc = run_script(PUBLISH_AND_DIE, tmp_path / "p.db", tmp_path, ROOT)
    assert proc.returncode == 9, proc.stderr
    left = [p.name for p in tmp_path.glob(".p.db.*")]
    assert left, "the kill left no temporary file: the test did not bite"
    device = make_device("p", blobs=DirectoryBlobStore(tmp_path / "blobs"), key=KEY)
    assert [p.name for p in tmp_path.glob(".p.db.*")] == []
    assert device.sync().snapshot is not None
