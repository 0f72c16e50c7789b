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
    BlobNotFoundError,
    ConfigurationError,
    DirectoryBlobStore,
    OfflineError,
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
    """The visible files under ``root`` (the cache's own hidden files and folders left out)."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p.read_bytes()
    return out


def _truthful(cache: ReferenceFiles) -> tuple[str | None, set[str]]:
    """What ``installed()`` says, after checking each file it lists is there with that
    content (and is a regular file, not a link)."""
    boundary, entries = cache.installed()
    for path, entry in entries.items():
        file = cache.path(path)
        assert file.is_file() and not file.is_symlink(), path
        assert _sha(file.read_bytes()) == entry.sha256, path
    return boundary, set(entries)


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
    assert _tree(tmp_path / "cache") == {}  # not a half set: none until all are verified
    assert _truthful(cache) == (None, set())
    blobs.put("reference/x/files/b.bin", io.BytesIO(b"b" * 100))  # repaired
    report = cache.sync("x")
    assert report.downloaded == ("b.bin",)  # only the missing one
    assert report.resumed == ("a.bin",)  # verified by the failed sync, kept aside
    assert _tree(tmp_path / "cache") == files
    assert _truthful(cache) == ("x", set(files))


def _listing(*files: dict[str, Any], boundary: str = "x") -> bytes:
    entries = [{"size": 1, "sha256": "0" * 64, **f} for f in files]
    return json.dumps({"format": FILES_FORMAT, "boundary": boundary, "files": entries}).encode()


_MALFORMED = {
    "not json": b"not json",
    "another format": json.dumps({"format": "other"}).encode(),
    "another boundary": _listing(boundary="y"),
    "files not a list": json.dumps({"format": FILES_FORMAT, "boundary": "x", "files": {}}).encode(),
    "path up": _listing({"path": "../evil"}),
    "absolute path": _listing({"path": "/etc/x"}),
    "negative size": _listing({"path": "a", "size": -1}),
    "bad sha": _listing({"path": "a", "sha256": "zz"}),
    "the cache's own name": _listing({"path": ".manifest.json"}),
    "a hidden folder": _listing({"path": "a/.staging/b"}),
    "a key outside the prefix": _listing({"path": "a", "key": "users/other/secret.db"}),
    "a key climbing out": _listing({"path": "a", "key": "reference/../users/other/x"}),
    "a file and a folder": _listing({"path": "tiles/1"}, {"path": "tiles/1/2.png"}),
    "a name over 255 bytes": _listing({"path": "tiles/" + "x" * 256}),
    "NUL in a name": _listing({"path": "a\x00b.png"}),
    "a control character": _listing({"path": "a\nb.png"}),
    "names equal but for case": _listing({"path": "A.png"}, {"path": "a.png"}),
    "deeply nested": b'{"format": "replicator-files/1", "boundary": "x", "files": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
}


@pytest.mark.parametrize("manifest", list(_MALFORMED.values()), ids=list(_MALFORMED))
def test_a_malformed_manifest_changes_nothing(tmp_path, manifest):
    blobs = DirectoryBlobStore(tmp_path / "b")
    Tiles(blobs).publish("x", {"a.bin": b"kept"})
    blobs.put("users/other/secret.db", io.BytesIO(b"not for this device"))
    cache = ReferenceFiles(blobs, tmp_path / "cache")
    cache.sync("x")
    blobs.put("reference/x/manifest.json", io.BytesIO(manifest))
    with pytest.raises(RemoteDataError) as info:
        cache.sync("x")
    assert "reference/x/manifest.json" in str(info.value) and info.value.hint
    assert _tree(tmp_path / "cache") == {"a.bin": b"kept"}
    assert _truthful(cache) == ("x", {"a.bin"})
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
    staged = {p.name for p in cache.glob(".staging/*")}
    verified = {p for p, data in files.items() if _sha(data) in staged}
    report = ReferenceFiles(blobs, cache).sync("x")
    assert _tree(cache) == files
    assert set(report.downloaded) | set(report.resumed) == set(files) - set(before)
    assert (
        not set(report.downloaded) & verified
    )  # what the killed one verified is not fetched again
    assert not [p for p in cache.rglob(".part-*")]  # leftovers of the killed one are gone


def test_a_cache_path_that_is_a_file_is_one_clear_error(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "b")
    Tiles(blobs).publish("x", {"a.bin": b"a"})
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot write the reference cache"):
        ReferenceFiles(blobs, tmp_path / "cache").sync("x")


# -- a sync that fails half-way, links planted in the cache, a kill during the switch -------

NORTH = {
    "tiles/1/0.png": b"north 0" * 50,
    "tiles/1/1.png": b"north 1" * 50,
    "routes/graph.bin": b"graph" * 400,
}
SOUTH = {
    "tiles/1/0.png": b"changed" * 50,  # a path of the old set, with new content
    "tiles/2/0.png": b"south 0" * 50,
    "tiles/2/1.png": b"south 1" * 50,
    "tiles/2/2.png": b"south 2" * 50,
    "routes/graph.bin": b"graph" * 400,  # the same: kept
}


@pytest.mark.parametrize("fault", ["a file that vanished", "a checksum that does not match"])
def test_a_boundary_switch_that_fails_half_way_keeps_the_old_files(blobs, tmp_path, fault):
    tiles = Tiles(blobs)
    tiles.publish("north", NORTH)
    cache = ReferenceFiles(blobs, tmp_path / "cache", workers=2)
    cache.sync("north")
    tiles.publish("south", SOUTH)
    broken = "reference/south/files/tiles/2/1.png"
    if fault == "a file that vanished":
        blobs.delete(broken)
        expected: type[Exception] = BlobNotFoundError
    else:
        blobs.put(broken, io.BytesIO(b"x" * len(SOUTH["tiles/2/1.png"])))
        expected = BlobIntegrityError
    with pytest.raises(expected):
        cache.sync("south")
    assert _tree(tmp_path / "cache") == NORTH  # the old area's map is all there
    assert _truthful(cache) == ("north", set(NORTH))
    tiles.publish("south", SOUTH)  # repaired
    report = cache.sync("south")
    assert report.downloaded == ("tiles/2/1.png",)
    assert set(report.resumed) == {"tiles/1/0.png", "tiles/2/0.png", "tiles/2/2.png"}
    assert report.kept == 1 and report.removed == ("tiles/1/1.png",)
    assert _tree(tmp_path / "cache") == SOUTH
    assert _truthful(cache) == ("south", set(SOUTH))


def test_a_boundary_switch_that_loses_the_network_half_way_keeps_the_old_files(
    moto_server, tmp_path
):
    """S3 through a proxy that starts refusing connections once a file is in."""
    import boto3
    from botocore.config import Config

    from replicator.stores.s3 import S3BlobStore
    from replicator.testing import FaultProxy

    direct = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = "b" + os.urandom(6).hex()
    direct.create_bucket(Bucket=bucket)
    tiles = Tiles(S3BlobStore(bucket, client=direct))
    tiles.publish("north", NORTH)
    tiles.publish("south", SOUTH)
    proxy = FaultProxy(int(moto_server.rsplit(":", 1)[1])).start()
    try:
        config = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=2)
        client = boto3.client(
            "s3", endpoint_url=f"http://{proxy.host}", region_name="us-east-1", config=config
        )
        cache = ReferenceFiles(S3BlobStore(bucket, client=client), tmp_path / "cache", workers=1)
        cache.sync("north")

        def network_goes(done: int, total: int) -> None:
            if done == 1:  # of the 4 to fetch (with workers=1, one at a time)
                proxy.mode = "refuse"
                proxy.reset_all()

        cache.on_progress = network_goes
        with pytest.raises(OfflineError):
            cache.sync("south")
        assert _tree(tmp_path / "cache") == NORTH
        assert _truthful(cache) == ("north", set(NORTH))
        proxy.mode = "pass"  # the network is back
        cache.on_progress = None
        report = cache.sync("south")
    finally:
        proxy.stop()
    assert len(report.resumed) >= 1  # what came before the network went is not fetched again
    assert set(report.downloaded) | set(report.resumed) == set(SOUTH) - {"routes/graph.bin"}
    assert _tree(tmp_path / "cache") == SOUTH
    assert _truthful(cache) == ("south", set(SOUTH))


@pytest.mark.parametrize(
    "where", ["a folder", "a folder holding the same files", "the staging folder", "a file"]
)
def test_nothing_is_written_through_a_link_planted_in_the_cache(tmp_path, where):
    blobs = DirectoryBlobStore(tmp_path / "b")
    files = {"tiles/1.png": b"one", "tiles/2.png": b"two"}
    Tiles(blobs).publish("x", files)
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = {"1.png": b"one" if where == "a folder holding the same files" else b"precious"}
    if where == "a folder holding the same files":
        precious["2.png"] = b"two"
    for name, data in precious.items():
        (outside / name).write_bytes(data)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    if where.startswith("a folder"):
        (cache_dir / "tiles").symlink_to(outside, target_is_directory=True)
    elif where == "the staging folder":
        (cache_dir / ".staging").symlink_to(outside, target_is_directory=True)
    else:
        (cache_dir / "tiles").mkdir()
        (cache_dir / "tiles/1.png").symlink_to(outside / "1.png")
    cache = ReferenceFiles(blobs, cache_dir)
    cache.sync("x")
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == precious  # untouched
    assert _tree(cache_dir) == files
    assert not [p for p in cache_dir.rglob("*") if p.is_symlink()]
    assert _truthful(cache) == ("x", set(files))


_KILLED_IN_THE_SWITCH = """
import os, signal, sys
from replicator import DirectoryBlobStore, ReferenceFiles
after = int(sys.argv[3])
real, moved = os.replace, [0]
def replace(src, dst, *args, **kw):
    if "/.staging/" in str(src) and "/.staging/" not in str(dst):  # a staged file put in place
        if moved[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
        moved[0] += 1
    return real(src, dst, *args, **kw)
os.replace = replace
ReferenceFiles(DirectoryBlobStore(sys.argv[1]), sys.argv[2]).sync("south")
"""


@pytest.mark.parametrize("after", [0, 2, 5])
def test_a_sync_killed_during_the_switch_is_finished_before_installed_answers(tmp_path, after):
    import signal
    import subprocess
    import sys

    blobs = DirectoryBlobStore(tmp_path / "b")
    north = {f"t/{i}.bin": b"n%d" % i * 100 for i in range(6)}
    south = {f"t/{i}.bin": b"s%d" % i * 100 for i in range(3, 9)}  # 3 paths in common
    Tiles(blobs).publish("north", north)
    Tiles(blobs).publish("south", south)
    cache_dir = tmp_path / "cache"
    ReferenceFiles(blobs, cache_dir).sync("north")
    args = [str(tmp_path / "b"), str(cache_dir), str(after)]
    proc = subprocess.run([sys.executable, "-c", _KILLED_IN_THE_SWITCH, *args], check=False)
    assert proc.returncode == -signal.SIGKILL  # killed with `after` files of 6 in place
    tree = _tree(cache_dir)
    assert all(data in (north.get(p), south.get(p)) for p, data in tree.items())  # each whole
    cache = ReferenceFiles(blobs, cache_dir)
    assert _truthful(cache) == ("south", set(south))  # the switch was finished first
    assert _tree(cache_dir) == south
    report = cache.sync("south")
    assert report.downloaded == () and report.resumed == () and report.kept == 6


@pytest.mark.parametrize("boundary", ["", "../x", ".hidden", "a/b", "a\x00b", "x" * 300])
def test_a_bad_boundary_name_is_refused_before_anything_is_read(tmp_path, boundary):
    cache = ReferenceFiles(DirectoryBlobStore(tmp_path / "b"), tmp_path / "cache")
    with pytest.raises(ConfigurationError, match="bad boundary name") as info:
        cache.sync(boundary)
    assert info.value.hint
    assert not (tmp_path / "cache").exists()
