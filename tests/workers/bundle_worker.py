"""A data collector's process for the bundle kill test: registers households, edits
some, and syncs through bundles (queue mode), until it is killed.

usage: bundle_worker.py PLACE SEED [final]
``final``: sync until every row is synced (an ingestor must be running), then exit.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from pathlib import Path

import peewee

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    Replicator,
    ReplicatorError,
    StoreIngest,
)
from tests.campaign_models import MODELS, REFERENCE, Household


def open_collector(place: Path) -> Replicator:
    remote = EmbeddedRemote(place / "remote.db")
    db = peewee.SqliteDatabase(str(place / "collector.db"), pragmas={"foreign_keys": 1}, timeout=30)
    return Replicator(
        db,
        MODELS,
        remote,
        device_name="collector",
        bundles=Bundles(
            DirectoryBlobStore(place / "bucket"), StoreIngest(remote), [Household], max_rows=40
        ),
        download_only=REFERENCE,
    )


def main() -> None:
    place, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    device = open_collector(place)
    if len(sys.argv) > 3:
        for _ in range(200):
            device.sync()
            if device.pending_count() == 0:
                return
            time.sleep(0.1)
        raise SystemExit("rows stayed unsynced")
    while True:
        with device.bound():
            for _ in range(rng.randrange(1, 30)):
                Household.create(head=f"h{rng.random():.6f}", members=rng.randrange(1, 9))
            some = Household.select(Household.id).order_by(peewee.fn.random()).limit(3)
            for row in some:
                Household.update(members=rng.randrange(10, 99)).where(
                    Household.id == row.id
                ).execute()
        with contextlib.suppress(ReplicatorError):  # e.g. the remote busy: next round
            device.sync()


if __name__ == "__main__":
    main()
