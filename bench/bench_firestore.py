"""Firestore benchmarks on the official emulator, as ratios against the raw client.

In one run, for N rows (parents and children, 1:4):

* upload: the engine's sync vs the raw client writing the same documents in
  500-write batches, and vs the seed's one-document-at-a-time upload;
* download: a second device's sync vs a raw paginated query (500 a page) plus
  ``sqlite3.executemany`` into a local table.

The emulator and the client are warmed on both paths first, and each run
alternates which path goes first, on fresh roots (min and median of --runs).

usage: python bench/bench_firestore.py [--rows 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import peewee

from replicator import Replicator, SyncModel
from replicator.codec import to_native
from replicator.testing import FirestoreEmulator, find_jar


class Parent(SyncModel):
    name = peewee.TextField()
    score = peewee.IntegerField(default=0)


class Child(SyncModel):
    parent = peewee.ForeignKeyField(Parent, on_delete="CASCADE")
    text = peewee.TextField()


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    jar = find_jar()
    if jar is None:
        raise SystemExit("the Firestore emulator is not installed")
    emulator = FirestoreEmulator(jar).start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        run(args.rows, args.runs)
    finally:
        emulator.stop()


def _device(path: Path, client: Any, root: str, name: str) -> Replicator:
    from replicator.stores.firestore import FirestoreRemote

    db = peewee.SqliteDatabase(str(path), pragmas={"foreign_keys": 1})
    return Replicator(db, [Parent, Child], FirestoreRemote(client, root=root), device_name=name)


def _fill(device: Replicator, parents: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Rows on the device, and the same rows as raw documents."""
    from google.cloud import firestore

    with device.bound(), device.database.atomic():
        for i in range(parents):
            p = Parent.create(name=f"parent {i}", score=i)
            for j in range(4):
                Child.create(parent=p, text=f"child {i}.{j}")
    docs = []
    for model in (Parent, Child):
        table = model._meta.table_name
        cols = [f.column_name for f in model._meta.sorted_fields]
        cols = [c for c in cols if c not in ("isDirty", "serverId", "syncRev")]
        names = ", ".join(f'"{c}"' for c in cols)
        for r in device.database.execute_sql(f'SELECT {names} FROM "{table}"').fetchall():
            data = to_native(model, dict(zip(cols, r, strict=True)))
            data.update(deleted=False, changedAt=firestore.SERVER_TIMESTAMP)
            docs.append((table, r[0], data))
    return docs


def _raw_upload(client: Any, root: str, docs: list[tuple[str, str, dict[str, Any]]]) -> None:
    base = client.document(root)
    for start in range(0, len(docs), 500):
        batch = client.batch()
        for table, doc_id, data in docs[start : start + 500]:
            batch.set(base.collection(table).document(doc_id), data)
        batch.commit()


def _raw_download(client: Any, root: str, dest: Path) -> None:
    conn = sqlite3.connect(dest, isolation_level=None)
    for table in ("parent", "child"):
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id PRIMARY KEY, data)")
        query = client.document(root).collection(table).order_by("changedAt").order_by("__name__")
        last = None
        while True:
            q = query.start_after(last) if last is not None else query
            page = list(q.limit(500).stream())
            if not page:
                break
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO {table} VALUES (?, ?)", [(s.id, repr(s.to_dict())) for s in page]
            )
            conn.execute("COMMIT")
            last = page[-1]
            if len(page) < 500:
                break
    conn.close()


def _stats(times: list[float]) -> str:
    return f"min {min(times):6.2f}s median {statistics.median(times):6.2f}s"


def run(rows: int, runs: int) -> None:
    from google.cloud import firestore

    client = firestore.Client(project="demo-bench")
    parents = rows // 5
    tmp = Path(tempfile.mkdtemp())
    try:
        # warm the emulator and the client's channel on both paths before timing anything
        warm = _device(tmp / "warm.db", client, "users/warm-engine", "warm")
        warm_docs = _fill(warm, 100)
        _raw_upload(client, "users/warm-raw", warm_docs)
        warm.sync()
        _raw_download(client, "users/warm-raw", tmp / "warm-raw.db")
        _device(tmp / "warm-b.db", client, "users/warm-engine", "warm-b").sync()
        times: dict[str, list[float]] = {k: [] for k in ("raw up", "up", "raw down", "down")}
        total = 0
        report: Any = None
        down: Any = None
        b: Any = None
        for i in range(runs):
            a = _device(tmp / f"a{i}.db", client, f"users/engine{i}", f"a{i}")
            docs = _fill(a, parents)
            total = len(docs)
            order = ("raw", "engine") if i % 2 == 0 else ("engine", "raw")
            for who in order:  # alternate, so neither always meets the warmer emulator
                if who == "raw":
                    times["raw up"].append(
                        timed(lambda: _raw_upload(client, f"users/raw{i}", docs))  # noqa: B023
                    )
                    times["raw down"].append(
                        timed(lambda: _raw_download(client, f"users/raw{i}", tmp / f"r{i}.db"))  # noqa: B023
                    )
                else:
                    start = time.perf_counter()
                    report = a.sync()
                    times["up"].append(time.perf_counter() - start)
                    b = _device(tmp / f"b{i}.db", client, f"users/engine{i}", f"b{i}")
                    start = time.perf_counter()
                    down = b.sync()
                    times["down"].append(time.perf_counter() - start)
            assert report.total_uploaded == total, report.summary()
            assert down.total_downloaded == total, down.summary()
        single = {"t": 0.0}
        subset = docs[:1000]
        single["t"] = timed(
            lambda: [client.document("users/single").collection(t).document(d).set(data)
                     for t, d, data in subset]
        )  # fmt: skip
        idle = b.sync()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    up, raw_up = statistics.median(times["up"]), statistics.median(times["raw up"])
    dn, raw_dn = statistics.median(times["down"]), statistics.median(times["raw down"])
    print(f"Firestore emulator (warmed), {total} rows ({parents} parents), {runs} alternating runs")
    print(f"  upload   raw 500-write batches {_stats(times['raw up'])}")
    print(
        f"           engine sync           {_stats(times['up'])}  {up / raw_up:.2f}x raw"
        f" (min {min(times['up']) / min(times['raw up']):.2f}x)"
    )
    per_doc = single["t"] / len(subset)
    print(
        f"           raw one at a time     {per_doc * total:6.2f}s (extrapolated from"
        f" {len(subset)}): the engine is {per_doc * total / up:.1f}x faster"
    )
    print(f"           {report.usage.writes} writes, {report.usage.reads} reads")
    print(f"  download raw query+executemany {_stats(times['raw down'])}")
    print(
        f"           engine sync           {_stats(times['down'])}  {dn / raw_dn:.2f}x raw"
        f" (min {min(times['down']) / min(times['raw down']):.2f}x)"
    )
    print(f"           {down.usage.reads} reads, {down.usage.writes} writes")
    print(f"  idle sync: {idle.usage.reads} read(s), {idle.usage.writes} writes")


if __name__ == "__main__":
    main()
