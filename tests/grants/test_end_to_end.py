"""Everything a device does with S3, through grants only: publish under Big Brother,
restore at login, older snapshots, bundles to the ingest service, reference files. The
device holds an ID token and the service's URL; the service holds the S3 identity."""

from __future__ import annotations

import io
import os
from pathlib import Path

import peewee
import pytest

from replicator import (
    AccessDeniedError,
    Bundles,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    Replicator,
    SnapshotKey,
)
from replicator.reference.files import ReferenceFiles
from replicator.stores.granted import GrantedBlobStore
from replicator.stores.s3 import S3BlobStore
from tests.campaign_models import MODELS as CAMPAIGN
from tests.campaign_models import REFERENCE, Household
from tests.models import MODELS, Note

KEY = SnapshotKey.generate()


def _device(tmp_path: Path, name: str, remote, models=MODELS, **kw) -> Replicator:
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, models, remote, device_name=name, **kw)


def _keys(storage) -> list[str]:
    client = storage.seaweed.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_publish_and_restore_through_grants_only(granted_storage, tmp_path):
    uid = "u" + os.urandom(6).hex()
    remote = EmbeddedRemote(tmp_path / "remote.db")
    phone_blobs = granted_storage.store(uid)
    phone = _device(tmp_path, "phone", remote, blobs=phone_blobs, key=KEY)
    for n in range(3):  # three publishes: older snapshots are pruned by the device
        with phone.bound():
            Note.create(title=f"note {n}")
        report = phone.sync()
        assert report.snapshot is not None, report.snapshot_error
    laptop = _device(tmp_path, "laptop", remote, blobs=granted_storage.store(uid), key=KEY)
    report = laptop.login()
    assert report.restored is not None
    with laptop.bound():
        assert sorted(n.title for n in Note.select()) == ["note 0", "note 1", "note 2"]
    mine = [k for k in _keys(granted_storage) if k.startswith(f"users/{uid}/")]
    assert mine and all(k.startswith(f"users/{uid}/snapshots/") for k in mine)
    # what the device saw is what the bucket holds, through the service's credentials
    service_view = S3BlobStore(
        granted_storage.bucket, f"users/{uid}", client=granted_storage.service_client
    )
    assert [i.key for i in phone_blobs.list("snapshots/")] == [
        i.key for i in service_view.list("snapshots/")
    ]
    assert phone_blobs.grants > 0 and phone_blobs.signed >= phone_blobs.grants


def test_bundles_go_up_through_grants_and_the_service_reads_them_with_its_own(
    granted_storage, tmp_path
):
    from replicator.grants import Signer

    uid = "u" + os.urandom(6).hex()
    remote = EmbeddedRemote(tmp_path / "remote.db")
    service_blobs = S3BlobStore(
        granted_storage.bucket, f"users/{uid}", client=granted_storage.service_client
    )
    ingestor = Ingestor(service_blobs, remote, [Household])
    signer = Signer(granted_storage.service_client, granted_storage.bucket)
    from replicator.auth.verify import IdTokenVerifier
    from replicator.grants import storage_routes
    from replicator.testing.grants import PROJECT

    routes = storage_routes(signer, IdTokenVerifier(PROJECT, emulator=True))
    with ingestor.serve(routes=routes) as server:
        device_blobs = GrantedBlobStore(server.base_url, granted_storage.tokens(uid))
        bundles = Bundles(device_blobs, HttpIngest(server.url), [Household])
        collector = _device(
            tmp_path, "collector", remote, CAMPAIGN, bundles=bundles, download_only=REFERENCE
        )
        with collector.bound():
            for n in range(5):
                Household.create(head=f"head {n}", members=n + 1)
        report = collector.sync()
        assert report.bundled == {"households": 5}
        assert collector.pending_count() == 0
    stored = {d.data["head"] for d in remote.all_docs("households").values()}
    assert stored == {f"head {n}" for n in range(5)}
    assert [k for k in _keys(granted_storage) if k.startswith(f"users/{uid}/bundles/")]


def test_reference_files_come_from_the_shared_read_only_space(granted_storage, tmp_path):
    """Reference files published by an operator (bucket credentials), read by devices
    through the service's read-only shared space."""
    from tests.reference.test_reference import NORTH, Tiles

    # the space is a blob store rooted at its folder, on both sides
    space = S3BlobStore(
        granted_storage.bucket, "reference", client=granted_storage.seaweed.client()
    )
    Tiles(space).publish("north", NORTH)
    shared = granted_storage.store("u" + os.urandom(6).hex(), space="reference")
    cache = ReferenceFiles(shared, tmp_path / "cache", workers=2)
    report = cache.sync("north")
    assert sorted(report.downloaded) == sorted(NORTH)
    for path, data in NORTH.items():
        assert (tmp_path / "cache" / path).read_bytes() == data
    with pytest.raises(AccessDeniedError):
        shared.put("reference/north/manifest.json", io.BytesIO(b"{}"))
