"""A device in its own process that publishes at the same instant as the others.

usage: python publish_worker.py DB REMOTE ENDPOINT BUCKET NAME ROUNDS SYNC_DIR DEVICES

Each round: wait for ``go-{round}`` in SYNC_DIR (the test checks the previous round
first), write rows and sync them without publishing, then ``ready-{round}-{NAME}`` and
wait until all DEVICES are ready (the barrier), then sync with Big Brother (the
download of the others' rows, then the race for the manifest), then print one JSON
line (the snapshot it published or None, its error, its manifest writes) and
``done-{round}-{NAME}``. REMOTE is an EmbeddedRemote file; the blob store is S3 at
ENDPOINT (SeaweedFS, the ADMIN identity), prefix ``users/racers``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SnapshotKey, TransientError
from replicator.stores.s3 import S3BlobStore
from replicator.strategies.snapshot import BigBrother, Never
from replicator.testing import SeaweedS3
from tests.models import MODELS, Comment, Note

KEY = SnapshotKey(bytes(range(32)))
MANIFEST_URL_END = "/users/racers/snapshots/manifest.json"


def wait_for(folder: Path, pattern: str, count: int, timeout: float = 120) -> None:
    until = time.monotonic() + timeout
    while len(list(folder.glob(pattern))) < count:
        if time.monotonic() > until:
            raise SystemExit(f"timed out waiting for {count} x {pattern}")
        time.sleep(0.002)


def sync(device: Replicator):
    for _attempt in range(100):  # the embedded remote's file lock may be busy
        try:
            return device.sync()
        except TransientError:
            time.sleep(0.05)
    return device.sync()


def main() -> None:
    db_path, remote_path, endpoint, bucket, name, rounds, sync_dir, devices = sys.argv[1:9]
    folder, n = Path(sync_dir), int(devices)
    server = SeaweedS3("weed")
    server.endpoint = endpoint
    client = server.client()
    writes: list[str] = []

    def count(request, **kw):
        if request.method == "PUT" and request.url.split("?")[0].endswith(MANIFEST_URL_END):
            writes.append(request.url)

    client.meta.events.register("before-send.s3.PutObject", count)
    blobs = S3BlobStore(bucket, prefix="users/racers", client=client)
    db = peewee.SqliteDatabase(db_path, pragmas={"foreign_keys": 1}, timeout=30)
    device = Replicator(db, MODELS, EmbeddedRemote(remote_path), blobs, KEY, device_name=name)
    for r in range(int(rounds)):
        wait_for(folder, f"go-{r}", 1)
        with device.bound():
            for i in range(2):
                note = Note.create(title=f"{name} round {r} note {i}")
                Comment.create(note=note, text=f"{name} {r} {i}")
        device.snapshot_strategy = Never()
        sync(device)
        (folder / f"ready-{r}-{name}").touch()
        wait_for(folder, f"ready-{r}-*", n)
        device.snapshot_strategy = BigBrother(keep=2)
        before = len(writes)
        report = sync(device)
        print(
            json.dumps(
                {
                    "round": r,
                    "name": name,
                    "snapshot": report.snapshot,
                    "error": repr(report.snapshot_error) if report.snapshot_error else None,
                    "manifest_writes": len(writes) - before,
                }
            ),
            flush=True,
        )
        (folder / f"done-{r}-{name}").touch()
    db.close()


if __name__ == "__main__":
    main()
