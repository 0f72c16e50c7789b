"""Fixtures: fresh SQLite files per test, devices that share one remote, cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator
from replicator.demo import Comment, Note

MODELS = [Note, Comment]


FIRESTORE_PROJECT = "demo-replicator"


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[Any]:
    """The official Firestore emulator, started once per test session (or the one
    CI started, named by REPLICATOR_FIRESTORE_EMULATOR_HOST)."""
    from replicator.testing import FirestoreEmulator, find_jar

    running = os.environ.get("REPLICATOR_FIRESTORE_EMULATOR_HOST")
    if running:
        external = FirestoreEmulator(find_jar() or "", port=int(running.rsplit(":", 1)[1]))
        previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
        os.environ["FIRESTORE_EMULATOR_HOST"] = external.host
        yield external
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous
        return
    jar = find_jar()
    if jar is None:
        pytest.skip(
            "FIRESTORE EMULATOR MISSING: install the Debian package "
            "google-cloud-cli-firestore-emulator (or set REPLICATOR_FIRESTORE_EMULATOR_JAR)"
        )
    emulator = FirestoreEmulator(jar).start()
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    yield emulator
    emulator.stop()
    if previous is None:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    else:
        os.environ["FIRESTORE_EMULATOR_HOST"] = previous


@pytest.fixture
def firestore_client(firestore_emulator: Any) -> Any:
    from google.cloud import firestore

    firestore_emulator.reset(FIRESTORE_PROJECT)
    return firestore.Client(project=FIRESTORE_PROJECT)


def make_firestore_remote(client: Any, **kw: Any) -> Any:
    from replicator.stores.firestore import FirestoreRemote

    kw.setdefault("timeout", 10.0)
    return FirestoreRemote(client, root="users/test-user", **kw)


@pytest.fixture(params=["embedded", "firestore"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The remote every scenario test runs on: each test runs once per store."""
    if request.param == "embedded":
        return EmbeddedRemote(tmp_path / "remote.db")
    return make_firestore_remote(request.getfixturevalue("firestore_client"))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 in server mode on 127.0.0.1: boto3 talks to it over a real socket."""
    from moto.server import ThreadedMotoServer

    from replicator.testing import free_port

    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    running = os.environ.get("REPLICATOR_S3_ENDPOINT")
    if running:  # the server CI started
        yield running
        return
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_blobs(moto_server: str, request: pytest.FixtureRequest) -> Any:
    import boto3

    from replicator.stores.s3 import S3BlobStore

    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = "b" + os.urandom(6).hex()
    client.create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, prefix="users/test-user", client=client)


@pytest.fixture(params=["directory", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The blob store snapshot tests run on: each runs once per store."""
    if request.param == "directory":
        from replicator.stores.directory import DirectoryBlobStore

        return DirectoryBlobStore(tmp_path / "blobs")
    return request.getfixturevalue("s3_blobs")


@pytest.fixture
def embedded_remote(tmp_path: Path) -> EmbeddedRemote:
    return EmbeddedRemote(tmp_path / "remote.db")


DeviceFactory = Callable[..., Replicator]


@pytest.fixture
def make_device(tmp_path: Path, remote: EmbeddedRemote) -> Iterator[DeviceFactory]:
    opened: list[Replicator] = []

    def make(name: str, store: Any = None, models: Any = None, **kw: Any) -> Replicator:
        db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
        device = Replicator(db, models or MODELS, store or remote, device_name=name, **kw)
        opened.append(device)
        return device

    yield make
    for device in opened:
        device.database.close()


def snapshot_rows(device: Replicator, models: Any = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every synced row of a device, sync columns dropped, for comparing devices."""
    out = {}
    for model in models or MODELS:
        table = model._meta.table_name
        cols = [
            f.column_name
            for f in model._meta.sorted_fields
            if f.column_name not in ("isDirty", "serverId", "syncRev", "syncVersion")
        ]
        names = ", ".join(f'"{c}"' for c in cols)
        out[table] = device.database.execute_sql(
            f'SELECT {names} FROM "{table}" ORDER BY id'
        ).fetchall()
    return out


def assert_converged(devices: list[Replicator], models: Any = None, rounds: int = 3) -> list[Any]:
    """Sync every device ``rounds`` times in turn; then every device must hold the same
    rows and nothing dirty. Returns each device's rows."""
    for _ in range(rounds):
        for device in devices:
            device.sync()
    views = [snapshot_rows(d, models) for d in devices]
    for i, view in enumerate(views[1:], 1):
        assert view == views[0], f"device {i} differs from device 0"
    for device in devices:
        assert sum(device.dirty_counts().values()) == 0, "dirty rows left"
    return views


def run_script(script: str, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` in a new Python process (one that may kill itself part-way)."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sync_with_app_commit_at(
    device: Replicator, path: Path, position: int, statements: list[tuple[str, tuple[Any, ...]]]
) -> bool:
    """Run ``device.sync()`` while another connection (the app) commits ``statements`` in
    one transaction just before the sync's statement number ``position`` (sqlite3's trace
    callback), or the first later one at which the app can take the write lock. Returns
    whether the app's transaction went in."""
    import sqlite3

    app = sqlite3.connect(path, timeout=0, isolation_level=None)
    seen = {"n": 0, "done": False}

    def trace(sql: str) -> None:
        seen["n"] += 1
        if seen["done"] or seen["n"] < position:
            return
        try:
            app.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # the sync holds the write lock here: the app would wait; try the next one
        try:
            for sql_text, params in statements:
                app.execute(sql_text, params)
            app.execute("COMMIT")
        except BaseException:
            app.execute("ROLLBACK")
            raise
        seen["done"] = True

    conn = device.database.connection()
    conn.set_trace_callback(trace)
    try:
        device.sync()
    finally:
        conn.set_trace_callback(None)
        app.close()
    return bool(seen["done"])
