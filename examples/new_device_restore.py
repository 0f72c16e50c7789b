"""A user's new laptop restores the phone's encrypted snapshot, then downloads only the rest.

The phone works for a while and syncs; being the device with the freshest
data (Big Brother), it publishes an encrypted snapshot. A tablet adds a little
more. The new laptop logs in: its empty database is restored from the snapshot
in one download, and the sync that follows fetches only the tablet's rows.

Run: .venv/bin/python examples/new_device_restore.py [DIRECTORY]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import peewee

from replicator import (
    DirectoryBlobStore,
    EmbeddedRemote,
    Never,
    Passphrase,
    Replicator,
    SyncModel,
)


class Note(SyncModel):
    title = peewee.TextField()


def main(directory: Path) -> None:
    remote = EmbeddedRemote(directory / "remote.db")
    # in production: S3BlobStore("bucket", prefix="users/<uid>")
    blobs = DirectoryBlobStore(directory / "blobs")
    passphrase = Passphrase("the user's snapshot passphrase")

    def device(name: str, **kw: object) -> Replicator:
        db = peewee.SqliteDatabase(str(directory / f"{name}.db"))
        return Replicator(db, [Note], remote, blobs, passphrase, device_name=name, **kw)

    phone = device("phone")
    with phone.bound():
        for i in range(200):
            Note.create(title=f"note {i} from the phone")
    report = phone.sync()
    print(f"phone:  {report.summary()}")

    tablet = device("tablet", snapshot_strategy=Never())
    tablet.sync()
    with tablet.bound():
        for i in range(3):
            Note.create(title=f"note {i} from the tablet")
    print(f"tablet: {tablet.sync().summary()}")

    laptop = device("laptop")
    report = laptop.login()
    print(f"laptop: {report.summary()}")
    with laptop.bound():
        total = Note.select().count()
    print(f"laptop holds {total} notes after downloading only {report.total_downloaded}")
    assert report.restored is not None and total == 203 and report.total_downloaded == 3


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
