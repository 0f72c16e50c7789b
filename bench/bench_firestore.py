"""Firestore benchmarks on the official emulator, as ratios against the raw client.

In one run, for N rows (parents and children, 1:4):

* upload: the engine's sync vs the raw client writing the same documents in
  500-write batches, and vs the seed's one-document-at-a-time upload;
* download: a second device's sync vs a raw paginated query (500 a page) plus
  ``sqlite3.executemany`` into a local table.

usage: python bench/bench_firestore.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
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
    args = parser.parse_args()
    jar = find_jar()
    if jar is None:
        raise SystemExit("the Firestore emulator is not installed")
    emulator = FirestoreEmulator(jar).start()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        run(args.rows)
    finally:
        emulator.stop()


def run(rows: int) -> None:
    from google.cloud import firestore

    from replicator.stores.firestore import FirestoreRemote

    client = firestore.Client(project="demo-bench")
    parents = rows // 5
    tmp = Path(tempfile.mkdtemp())
    db = peewee.SqliteDatabase(str(tmp / "a.db"), pragmas={"foreign_keys": 1})
    engine = FirestoreRemote(client, root="users/engine")
    a = Replicator(db, [Parent, Child], engine, device_name="a")
    with a.bound(), db.atomic():
        for i in range(parents):
            p = Parent.create(name=f"parent {i}", score=i)
            for j in range(4):
                Child.create(parent=p, text=f"child {i}.{j}")
    docs: list[tuple[str, str, dict[str, Any]]] = []
    for model in (Parent, Child):
        table = model._meta.table_name
        cols = [f.column_name for f in model._meta.sorted_fields]
        cols = [c for c in cols if c not in ("isDirty", "serverId", "syncRev")]
        for r in db.execute_sql(f'SELECT {", ".join(cols)} FROM "{table}"').fetchall():
            data = to_native(model, dict(zip(cols, r, strict=True)))
            data.update(deleted=False, changedAt=firestore.SERVER_TIMESTAMP)
            docs.append((table, r[0], data))
    total = len(docs)

    def raw_batched() -> None:
        root = client.document("users/raw")
        for start in range(0, total, 500):
            batch = client.batch()
            for table, doc_id, data in docs[start : start + 500]:
                batch.set(root.collection(table).document(doc_id), data)
            batch.commit()

    def raw_one_by_one() -> None:
        root = client.document("users/single")
        for table, doc_id, data in docs:
            root.collection(table).document(doc_id).set(data)

    report: Any = None

    def engine_upload() -> None:
        nonlocal report
        report = a.sync()

    t_raw = timed(raw_batched)
    t_engine = timed(engine_upload)
    t_single = timed(raw_one_by_one)
    assert report.total_uploaded == total, report.summary()

    def raw_download() -> None:
        conn = sqlite3.connect(tmp / "raw-local.db", isolation_level=None)
        for table in ("parent", "child"):
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id PRIMARY KEY, data)")
            query = (
                client.document("users/raw")
                .collection(table)
                .order_by("changedAt")
                .order_by("__name__")
            )
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

    down: Any = None
    b = Replicator(
        peewee.SqliteDatabase(str(tmp / "b.db"), pragmas={"foreign_keys": 1}),
        [Parent, Child],
        FirestoreRemote(client, root="users/engine"),
        device_name="b",
    )

    def engine_download() -> None:
        nonlocal down
        down = b.sync()

    t_raw_down = timed(raw_download)
    t_engine_down = timed(engine_download)
    assert down.total_downloaded == total, down.summary()
    idle = b.sync()

    print(f"Firestore emulator, {total} rows ({parents} parents, {total - parents} children)")
    print(f"  upload   raw 500-write batches {t_raw:6.2f}s")
    print(f"           engine sync           {t_engine:6.2f}s  {t_engine / t_raw:.2f}x raw")
    print(
        f"           raw one at a time     {t_single:6.2f}s  engine is"
        f" {t_single / t_engine:.1f}x faster"
    )
    print(f"           {report.usage.writes} writes, {report.usage.reads} reads")
    print(f"  download raw query+executemany {t_raw_down:6.2f}s")
    ratio = t_engine_down / t_raw_down
    print(f"           engine sync           {t_engine_down:6.2f}s  {ratio:.2f}x raw")
    print(f"           {down.usage.reads} reads, {down.usage.writes} writes")
    print(f"  idle sync: {idle.usage.reads} read(s), {idle.usage.writes} writes")


if __name__ == "__main__":
    main()
