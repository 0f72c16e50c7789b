"""Encryption at rest (SQLCipher) benchmarks, printed as ratios measured in the same run.

* inserts through a SyncModel on SQLCipher against plain peewee on SQLCipher (the same
  >= 0.7x throughput goal as on plain SQLite), and SQLCipher against plain SQLite;
* a sync of 10,000 rows up from one device and down into another: every database
  encrypted, against every database plain;
* publishing, then restoring, a snapshot of a database of ``--megabytes`` (100 for the
  figures in the docs; 20 by default, so a default run stays short): into an
  encrypted database against into a plain one.

Each case warms both sides first, alternates their order, and runs ``--runs`` times
(3 at least for figures); min and median are printed.

usage: python bench/bench_sqlcipher.py [--rows N] [--sync-rows N] [--megabytes MB] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import peewee

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicator import (
    Always,
    DirectoryBlobStore,
    EmbeddedRemote,
    Never,
    Replicator,
    SnapshotKey,
    SyncModel,
)
from replicator.cipher import EncryptedDatabase

DB_KEY = bytes(range(32))
SNAPSHOT_KEY = SnapshotKey(bytes(range(32, 64)))


class SyncItem(SyncModel):
    name = peewee.TextField()
    body = peewee.TextField(default="")
    qty = peewee.IntegerField()

    class Meta:
        table_name = "item"


class PlainItem(peewee.Model):
    id = peewee.CharField(primary_key=True, max_length=36)
    name = peewee.TextField()
    body = peewee.TextField(default="")
    qty = peewee.IntegerField()

    class Meta:
        table_name = "item"


def open_db(path: Path, encrypted: bool) -> peewee.SqliteDatabase:
    if encrypted:
        return EncryptedDatabase(str(path), key=DB_KEY, pragmas={"journal_mode": "wal"})
    return peewee.SqliteDatabase(str(path), pragmas={"journal_mode": "wal"})


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(title: str, values: list[float], note: str = "") -> None:
    print(f"  {title:<44} min {min(values):.2f}x  median {statistics.median(values):.2f}x{note}")


def alternate(runs: int, sides: dict[str, Callable[[int], float]]) -> dict[str, list[float]]:
    """Each side's times over ``runs`` runs after one warm-up each, order alternating."""
    for side in sides.values():
        side(-1)
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(runs):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(sides[name](r))
    return times


def inserts(folder: Path, n: int, runs: int) -> None:
    def side(kind: str, encrypted: bool) -> Callable[[int], float]:
        def run(r: int) -> float:
            path = folder / f"ins-{kind}-{encrypted}-{r}.db"
            db = open_db(path, encrypted)
            model: type[peewee.Model] = PlainItem if kind == "plain" else SyncItem
            if kind == "plain":
                with db.bind_ctx([PlainItem]):
                    db.create_tables([PlainItem])
            else:
                Replicator(db, [SyncItem], EmbeddedRemote(folder / f"ins-r-{encrypted}-{r}.db"))
            ids = [str(uuid.uuid4()) for _ in range(n)]
            with db.bind_ctx([model]), db.atomic():
                took = timed(
                    lambda: [model.create(id=pk, name=f"n{i}", qty=i) for i, pk in enumerate(ids)]
                )
            db.close()
            return took

        return run

    t = alternate(
        runs,
        {
            "sync-cipher": side("sync", True),
            "plain-cipher": side("plain", True),
            "plain-sqlite": side("plain", False),
        },
    )
    print(f"inserts, {n:,} rows in one transaction, over {runs} runs")
    throughput = [p / s for p, s in zip(t["plain-cipher"], t["sync-cipher"], strict=True)]
    report("SyncModel/plain peewee throughput, SQLCipher", throughput, "  (goal >= 0.70x)")
    cost = [c / p for c, p in zip(t["plain-cipher"], t["plain-sqlite"], strict=True)]
    report("plain peewee time, SQLCipher / SQLite", cost)


def sync_rows(folder: Path, n: int, runs: int) -> None:
    def side(encrypted: bool) -> Callable[[int], float]:
        def run(r: int) -> float:
            here = folder / f"sync-{encrypted}-{r}"
            here.mkdir()
            remote = EmbeddedRemote(here / "remote.db")
            a = Replicator(open_db(here / "a.db", encrypted), [SyncItem], remote, device_name="a")
            with a.bound(), a.database.atomic():
                for i in range(n):
                    SyncItem.create(name=f"item {i}", body="x" * 60, qty=i)
            b = Replicator(open_db(here / "b.db", encrypted), [SyncItem], remote, device_name="b")
            took = timed(a.sync) + timed(b.sync)
            a.database.close()
            b.database.close()
            return took

        return run

    t = alternate(runs, {"cipher": side(True), "plain": side(False)})
    print(f"sync of {n:,} rows up from one device and down into another, over {runs} runs")
    report(
        "time, SQLCipher / plain SQLite",
        [c / p for c, p in zip(t["cipher"], t["plain"], strict=True)],
    )


def fill(db: peewee.SqliteDatabase, megabytes: int) -> None:
    rnd = random.Random(7)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(3, 9))) for _ in range(5000)]
    rows = megabytes * 1_000_000 // 650
    conn = db.connection()  # inside the caller's transaction
    batch = []
    for i in range(rows):
        pk = f"{rnd.getrandbits(128):032x}"
        body = " ".join(rnd.choices(words, k=70))
        batch.append((pk, " ".join(rnd.choices(words, k=3)), body, i, pk))
        if len(batch) == 5000 or i == rows - 1:
            conn.executemany(
                'INSERT INTO item (id, name, body, qty, "isDirty", "serverId", "syncRev")'
                " VALUES (?, ?, ?, ?, 0, ?, 0)",
                batch,
            )
            batch.clear()


def snapshots(folder: Path, megabytes: int, runs: int) -> None:
    def publisher(encrypted: bool, r: int) -> Replicator:
        here = folder / f"pub-{encrypted}-{r}"
        here.mkdir()
        remote = EmbeddedRemote(here / "remote.db")
        blobs = DirectoryBlobStore(here / "blobs")
        db = open_db(here / "a.db", encrypted)
        device = Replicator(db, [SyncItem], remote, blobs, SNAPSHOT_KEY, snapshot_strategy=Always())
        with device.local.applying():
            fill(db, megabytes)
        return device

    sources = {encrypted: publisher(encrypted, 0) for encrypted in (True, False)}

    def publish(encrypted: bool) -> Callable[[int], float]:
        def run(r: int) -> float:  # Always: every sync publishes the whole database again
            return timed(sources[encrypted].sync)

        return run

    source = sources[False]
    (pages,) = source.database.execute_sql("PRAGMA page_count").fetchone()
    size = pages * 4096 / 1e6

    def restore(encrypted: bool) -> Callable[[int], float]:
        def run(r: int) -> float:
            path = folder / f"restore-{encrypted}-{r}.db"
            device = Replicator(
                open_db(path, encrypted),
                [SyncItem],
                source.remote,
                source.blobs,
                SNAPSHOT_KEY,
                snapshot_strategy=Never(),
            )
            took = timed(device.restore)
            device.database.close()
            return took

        return run

    t = alternate(runs, {"cipher": publish(True), "plain": publish(False)})
    print(f"snapshot of a {size:.0f} MB database, over {runs} runs")
    report(
        "publish time, SQLCipher / plain SQLite",
        [c / p for c, p in zip(t["cipher"], t["plain"], strict=True)],
    )
    t = alternate(runs, {"cipher": restore(True), "plain": restore(False)})
    report(
        "restore time, SQLCipher / plain SQLite",
        [c / p for c, p in zip(t["cipher"], t["plain"], strict=True)],
    )
    print(
        f"  restore seconds: SQLCipher median {statistics.median(t['cipher']):.2f},"
        f" plain median {statistics.median(t['plain']):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--sync-rows", type=int, default=10_000)
    parser.add_argument(
        "--megabytes", type=int, default=int(os.environ.get("REPLICATOR_BENCH_RESTORE_MB", "20"))
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-sqlcipher-"))
    try:
        inserts(folder, args.rows, args.runs)
        sync_rows(folder, args.sync_rows, args.runs)
        snapshots(folder, args.megabytes, args.runs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
