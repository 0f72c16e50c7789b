"""Download-only reference data and reference files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import (
    BlobIntegrityError,
    ConfigurationError,
    DirectoryBlobStore,
    ReferenceFiles,
    RemoteDataError,
    Replicator,
    localizations,
)
from replicator.reference.files import FILES_FORMAT
from tests.campaign_models import MODELS, REFERENCE, FormSchema, Localization


@pytest.fixture
def pair(make_device):
    """The campaign service (writes the reference data) and a collector (only reads it)."""
    service = make_device("service", models=MODELS)
    collector = make_device("collector", models=MODELS, download_only=REFERENCE)
    return service, collector


def test_reference_data_comes_down_by_cursor_and_overwrites_the_local_copy(pair):
    service, collector = pair
    with service.bound():
        form = FormSchema.create(form="household", version=1, schema='{"fields": ["head"]}')
        Localization.create(
            form="household", language="pt", strings=json.dumps({"head": "Chefe", "n": 2})
        )
    service.sync()
    assert collector.sync().downloaded == {"form_schemas": 1, "localizations": 1}
    with collector.bound():
        assert FormSchema.get_by_id(form.id).version == 1
        # a dictionary per form and language; entries that are not text are left out
        assert localizations(Localization, "household", "pt") == {"head": "Chefe"}
        assert localizations(Localization, "household", "en") == {}
    with service.bound():
        FormSchema.update(version=2, schema='{"fields": ["head", "members"]}').execute()
    service.sync()
    report = collector.sync()
    assert report.downloaded == {"form_schemas": 1}  # only what changed: the cursor moved
    with collector.bound():
        assert FormSchema.get_by_id(form.id).version == 2
    assert collector.pending_count() == 0


@pytest.mark.parametrize("how", ["peewee", "raw_sql", "delete", "insert"])
def test_the_app_cannot_write_download_only_data(pair, how):
    service, collector = pair
    with service.bound():
        form = FormSchema.create(form="household", version=1, schema="{}")
    service.sync()
    collector.sync()
    db = collector.database
    with collector.bound(), pytest.raises(peewee.IntegrityError, match="download-only"):
        if how == "peewee":
            FormSchema.update(version=9).execute()
        elif how == "raw_sql":
            db.execute_sql("UPDATE form_schemas SET version = 9")
        elif how == "delete":
            FormSchema.delete_by_id(form.id)
        else:
            FormSchema.create(form="mine", version=1, schema="{}")
    assert db.execute_sql("SELECT version, count(*) FROM form_schemas").fetchone() == (1, 1)
    assert collector.pending_count() == 0
    # and the engine still applies the service's changes
    with service.bound():
        FormSchema.update(version=3).execute()
    service.sync()
    collector.sync()
    assert db.execute_sql("SELECT version FROM form_schemas").fetchone() == (3,)


def test_a_collection_no_longer_download_only_is_writable_again(tmp_path, embedded_remote):
    db = peewee.SqliteDatabase(str(tmp_path / "d.db"))
    Replicator(db, MODELS, embedded_remote, download_only=REFERENCE)
    rep = Replicator(db, MODELS, embedded_remote)  # the app's next version changed its mind
    with rep.bound():
        FormSchema.create(form="f", version=1, schema="{}")
    assert rep.pending_count() == 1


def test_wrong_declarations_are_refused(tmp_path, embedded_remote):
    db = peewee.SqliteDatabase(str(tmp_path / "d.db"))
    with pytest.raises(ConfigurationError, match="not among the synced models"):
        Replicator(db, [FormSchema], embedded_remote, download_only=[Localization])
    with pytest.raises(ConfigurationError, match="field 'lang'"):
        localizations(Localization, "f", "pt", language_field="lang")


# -- reference files ------------------------------------------------------------------------


class Tiles:
    """A tile server's side: files and a manifest per boundary, in a blob store."""

    def __init__(self, blobs: Any) -> None:
        self.blobs = blobs

    def publish(self, boundary: str, files: dict[str, bytes], **extra: Any) -> None:
        entries = []
        for path, data in files.items():
            key = f"reference/{boundary}/files/{path}"
            self.blobs.put(key, io.BytesIO(data))
            entries.append({"path": path, "size": len(data), "sha256": _sha(data)})
        manifest = {"format": FILES_FORMAT, "boundary": boundary, "files": entries, **extra}
        self.blobs.put(
            f"reference/{boundary}/manifest.json", io.BytesIO(json.dumps(manifest).encode())
        )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_reference_files_download_only_what_changed_and_a_new_boundary_clears_the_old(
    blobs, tmp_path
):
    tiles = Tiles(blobs)
    north = {f"tiles/12/{x}/{y}.png": os.urandom(2000 + x) for x in range(4) for y in range(3)}
    north["routes/graph.bin"] = os.urandom(50_000)
    tiles.publish("north", north)
    cache = ReferenceFiles(blobs, tmp_path / "cache", workers=4)
    report = cache.sync("north")
    assert len(report.downloaded) == 13 and report.kept == 0
    assert _tree(tmp_path / "cache") == north

    changed = dict(north, **{"tiles/12/0/0.png": b"new tile"})
    tiles.publish("north", changed)
    report = cache.sync("north")
    assert report.downloaded == ("tiles/12/0/0.png",) and report.kept == 12
    assert _tree(tmp_path / "cache") == changed

    south = {"tiles/12/9/9.png": b"south tile", "routes/graph.bin": north["routes/graph.bin"]}
    tiles.publish("south", south)
    report = cache.sync("south")
    assert report.downloaded == ("tiles/12/9/9.png",)  # the routing file is the same
    assert len(report.removed) == 12
    assert _tree(tmp_path / "cache") == south
    assert not any((tmp_path / "cache/tiles/12").glob("0"))  # emptied folders go too


def test_a_file_that_does_not_match_its_manifest_is_never_installed(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "b")
    tiles = Tiles(blobs)
    files = {"a.bin": b"a" * 100, "b.bin": b"b" * 100}
    tiles.publish("x", files)
    blobs.put("reference/x/files/b.bin", io.BytesIO(b"c" * 100))  # altered after publishing
    cache = ReferenceFiles(blobs, tmp_path / "cache")
    with pytest.raises(BlobIntegrityError, match=r"b\.bin"):
        cache.sync("x")
    assert _tree(tmp_path / "cache") == {"a.bin": b"a" * 100}  # the good one is in
    blobs.put("reference/x/files/b.bin", io.BytesIO(b"b" * 100))  # repaired
    report = cache.sync("x")
    assert report.downloaded == ("b.bin",)  # only the missing one
    assert _tree(tmp_path / "cache") == files


@pytest.mark.parametrize(
    "manifest",
    [
        b"not json",
        json.dumps({"format": "other"}).encode(),
        json.dumps({"format": FILES_FORMAT, "boundary": "y", "files": []}).encode(),
        json.dumps({"format": FILES_FORMAT, "boundary": "x", "files": {}}).encode(),
        json.dumps(
            {
                "format": FILES_FORMAT,
                "boundary": "x",
                "files": [{"path": "../evil", "size": 1, "sha256": "0" * 64}],
            }
        ).encode(),
        json.dumps(
            {
                "format": FILES_FORMAT,
                "boundary": "x",
                "files": [{"path": "/etc/x", "size": 1, "sha256": "0" * 64}],
            }
        ).encode(),
        json.dumps(
            {
                "format": FILES_FORMAT,
                "boundary": "x",
                "files": [{"path": "a", "size": -1, "sha256": "0" * 64}],
            }
        ).encode(),
        json.dumps(
            {
                "format": FILES_FORMAT,
                "boundary": "x",
                "files": [{"path": "a", "size": 1, "sha256": "zz"}],
            }
        ).encode(),
        json.dumps(
            {
                "format": FILES_FORMAT,
                "boundary": "x",
                "files": [{"path": ".manifest.json", "size": 1, "sha256": "0" * 64}],
            }
        ).encode(),
    ],
)
def test_a_malformed_manifest_changes_nothing(tmp_path, manifest):
    blobs = DirectoryBlobStore(tmp_path / "b")
    Tiles(blobs).publish("x", {"a.bin": b"kept"})
    cache = ReferenceFiles(blobs, tmp_path / "cache")
    cache.sync("x")
    blobs.put("reference/x/manifest.json", io.BytesIO(manifest))
    with pytest.raises(RemoteDataError):
        cache.sync("x")
    assert _tree(tmp_path / "cache") == {"a.bin": b"kept"}
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil").exists()


def test_a_file_larger_than_announced_is_not_downloaded_to_its_end(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "b")
    Tiles(blobs).publish("x", {"a.bin": b"small"})
    blobs.put("reference/x/files/a.bin", io.BytesIO(b"x" * 5_000_000))
    with pytest.raises(BlobIntegrityError, match="larger"):
        ReferenceFiles(blobs, tmp_path / "cache").sync("x")
    assert _tree(tmp_path / "cache") == {}


def test_files_download_concurrently(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "b")
    Tiles(blobs).publish("x", {f"{i}.bin": bytes([i]) * 10 for i in range(8)})
    inside, most = [0], [0]
    lock = threading.Lock()
    real_get = blobs.get

    def slow_get(key: str, dest: Any, **kw: Any) -> Any:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.05)
        try:
            return real_get(key, dest, **kw)
        finally:
            with lock:
                inside[0] -= 1

    blobs.get = slow_get  # type: ignore[method-assign]
    ReferenceFiles(blobs, tmp_path / "cache", workers=4).sync("x")
    assert most[0] == 4


def test_a_new_device_logs_in_from_a_snapshot_holding_download_only_data(make_device, tmp_path):
    """The guard refuses the app's writes, never a restore's."""
    from replicator import Always, SnapshotKey

    key = SnapshotKey(bytes(range(32)))
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    service = make_device("service", models=MODELS)
    with service.bound():
        FormSchema.create(form="household", version=4, schema="{}")
    service.sync()
    first = make_device(
        "first",
        models=MODELS,
        blobs=blobs,
        key=key,
        snapshot_strategy=Always(),
        download_only=REFERENCE,
    )
    assert first.sync().snapshot is not None
    fresh = make_device("fresh", models=MODELS, blobs=blobs, key=key, download_only=REFERENCE)
    report = fresh.login()
    assert report.restored is not None
    db = fresh.database
    assert db.execute_sql("SELECT version FROM form_schemas").fetchone() == (4,)
    with pytest.raises(peewee.IntegrityError, match="download-only"):
        db.execute_sql("UPDATE form_schemas SET version = 5")


_SLOW_SYNC = """
import sys, time
from replicator import DirectoryBlobStore, ReferenceFiles
blobs = DirectoryBlobStore(sys.argv[1])
real = blobs.get
def slow(key, dest, **kw):
    time.sleep(0.02)
    return real(key, dest, **kw)
blobs.get = slow
ReferenceFiles(blobs, sys.argv[2], workers=3).sync("x")
"""


@pytest.mark.parametrize("seed", range(4))
def test_a_sync_killed_at_any_moment_is_finished_by_the_next_one(tmp_path, seed):
    import random
    import signal
    import subprocess
    import sys

    rng = random.Random(seed)
    blobs = DirectoryBlobStore(tmp_path / "b")
    files = {f"t/{i}.bin": os.urandom(rng.randrange(1, 300_000)) for i in range(40)}
    Tiles(blobs).publish("x", files)
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_SYNC, str(tmp_path / "b"), str(cache)],
        stderr=subprocess.PIPE,
    )
    threading.Event().wait(rng.uniform(0.05, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _tree(cache) if cache.exists() else {}
    assert all(files[p] == data for p, data in before.items())  # nothing half-written
    report = ReferenceFiles(blobs, cache).sync("x")
    assert _tree(cache) == files
    assert set(report.downloaded) == set(files) - set(before)  # only what was missing
    assert not [p for p in cache.rglob(".part-*")]  # leftovers of the killed one are gone


def test_a_cache_path_that_is_a_file_is_one_clear_error(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "b")
    Tiles(blobs).publish("x", {"a.bin": b"a"})
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot write the reference cache"):
        ReferenceFiles(blobs, tmp_path / "cache").sync("x")
