"""Field-data benchmarks (seed 001), printed as ratios against the raw work of the same run.

1. **Bundle upload + ingest** of N upload-only rows: a collector's ``sync()`` (read
   the rows, bundle, gzip, SHA-256, put in the bucket, queue the request), the
   ``Ingestor.poll()`` that verifies and applies it, and the collector's next
   ``sync()`` that marks the rows synced; against the raw work: select the same
   rows, JSON lines, gzip, put in the same bucket, get back, gunzip, decode, and
   push the documents into the same kind of remote in batches of the same size.
   Both on a directory bucket and the embedded remote, fresh files per run.
2. **Parallel downloads**: four collections with no foreign key between them,
   every pull delayed by ``--latency`` ms (a store across a network), downloaded by
   a new device with ``parallel_downloads=4`` and with ``=1`` (one after another).

Runs alternate the order of the two sides; the first run of each warms up and is
not counted. usage: python bench/bench_bundles.py [--rows N] [--runs R] [--latency MS]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import peewee

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    Ingestor,
    Replicator,
    StoreIngest,
    SyncModel,
)
from replicator.stores.base import DeviceRecord, Write
from replicator.testing import FaultyRemote


class Registration(SyncModel):
    head = peewee.TextField()
    members = peewee.IntegerField()
    village = peewee.TextField()
    notes = peewee.TextField()


class A(SyncModel):
    value = peewee.TextField()


class B(SyncModel):
    value = peewee.TextField()


class C(SyncModel):
    value = peewee.TextField()


class D(SyncModel):
    value = peewee.TextField()


def _collector(place: Path, rows: int) -> tuple[Replicator, DirectoryBlobStore, EmbeddedRemote]:
    remote = EmbeddedRemote(place / "remote.db")
    bucket = DirectoryBlobStore(place / "bucket")
    db = peewee.SqliteDatabase(str(place / "collector.db"))
    device = Replicator(
        db,
        [Registration],
        remote,
        bundles=Bundles(bucket, StoreIngest(remote), [Registration], max_rows=5000),
    )
    with device.bound(), db.atomic():
        for start in range(0, rows, 1000):
            Registration.insert_many(
                {"head": f"head {i}", "members": i % 9, "village": f"v{i % 50}", "notes": "x" * 40}
                for i in range(start, min(rows, start + 1000))
            ).execute()
    return device, bucket, remote


def engine_bundles(place: Path, rows: int) -> float:
    device, bucket, _ = _collector(place, rows)
    ingestor = Ingestor(bucket, EmbeddedRemote(place / "remote.db"), [Registration], name="bench")
    started = time.perf_counter()
    device.sync()
    decided = ingestor.poll(limit=10_000)
    report = device.sync()
    took = time.perf_counter() - started
    assert all(r.state == "accepted" for r in decided), decided
    assert sum(report.bundled.values()) == rows, report
    device.database.close()
    return took


def raw_bundles(place: Path, rows: int) -> float:
    device, bucket, remote = _collector(place, rows)
    cols = ["id", "head", "members", "village", "notes", "createdOn", "updatedOn", "updatedBy"]
    names = ", ".join(f'"{c}"' for c in cols)
    me = DeviceRecord(installation_id="raw")
    per_batch = remote.max_batch_writes - 1
    started = time.perf_counter()
    cursor = device.database.execute_sql(f"SELECT {names} FROM registration")
    batch_rows = cursor.fetchmany(5000)
    n = 0
    while batch_rows:
        text = "\n".join(json.dumps(dict(zip(cols, r, strict=True))) for r in batch_rows)
        key = f"raw/{n}.ndjson.gz"
        bucket.put(key, io.BytesIO(gzip.compress(text.encode(), compresslevel=6)))
        back = io.BytesIO()
        bucket.get(key, back)
        docs = [json.loads(line) for line in gzip.decompress(back.getvalue()).split(b"\n")]
        for start in range(0, len(docs), per_batch):
            remote.push(
                [Write("registration", d["id"], d) for d in docs[start : start + per_batch]], me
            )
        n += 1
        batch_rows = cursor.fetchmany(5000)
    took = time.perf_counter() - started
    device.database.close()
    return took


def _downloader(place: Path, latency: float, parallel: int) -> float:
    slow = FaultyRemote(EmbeddedRemote(place / "remote.db"))
    slow.hooks["pull"] = lambda *a, **k: time.sleep(latency)
    db = peewee.SqliteDatabase(str(place / f"reader-{parallel}-{time.monotonic_ns()}.db"))
    reader = Replicator(db, [A, B, C, D], slow, page_size=200, parallel_downloads=parallel)
    started = time.perf_counter()
    report = reader.sync()
    took = time.perf_counter() - started
    assert report.total_downloaded == 4 * 2000, report.summary()
    db.close()
    return took


def _source(place: Path) -> None:
    db = peewee.SqliteDatabase(str(place / "source.db"))
    writer = Replicator(db, [A, B, C, D], EmbeddedRemote(place / "remote.db"))
    with writer.bound(), db.atomic():
        for model in (A, B, C, D):
            model.insert_many({"value": f"{model.__name__}{i}"} for i in range(2000)).execute()
    writer.sync()
    db.close()


def _alternate(runs: int, ours: Any, raw: Any) -> tuple[list[float], list[float]]:
    mine, theirs = [], []
    for run in range(runs + 1):
        pair = [("ours", ours), ("raw", raw)]
        if run % 2:
            pair.reverse()
        for label, fn in pair:
            took = fn()
            if run:  # the first round warms up
                (mine if label == "ours" else theirs).append(took)
    return mine, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=20.0, help="ms added to every pull")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        counter = [0]

        def fresh() -> Path:
            counter[0] += 1
            place = Path(tmp) / str(counter[0])
            place.mkdir()
            return place

        mine, raw = _alternate(
            args.runs,
            lambda: engine_bundles(fresh(), args.rows),
            lambda: raw_bundles(fresh(), args.rows),
        )
        ratio = [m / r for m, r in zip(mine, raw, strict=True)]
        print(
            f"bundle upload + ingest of {args.rows:,} rows: engine {statistics.median(mine):.2f} s"
            f" vs raw compress+put+get+insert {statistics.median(raw):.2f} s;"
            f" ratio median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x,"
            f" max {max(ratio):.2f}x)"
        )
        place = fresh()
        _source(place)
        latency = args.latency / 1000
        par, seq = _alternate(
            args.runs,
            lambda: _downloader(place, latency, 4),
            lambda: _downloader(place, latency, 1),
        )
        ratio = [p / s for p, s in zip(par, seq, strict=True)]
        print(
            f"parallel downloads, 4 independent collections x 2,000 rows, {args.latency:g} ms"
            f" per pull: 4 at once {statistics.median(par):.2f} s vs one after another"
            f" {statistics.median(seq):.2f} s; wall-time ratio median"
            f" {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x, max {max(ratio):.2f}x)"
        )


if __name__ == "__main__":
    main()
