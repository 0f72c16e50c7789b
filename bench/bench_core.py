"""Core benchmarks, printed as ratios against the raw work done in the same run.

1. Local writes: 100k inserts and 100k updates through a SyncModel (change
   capture on) vs the same plain peewee model.
2. Upload: a sync of 10k dirty parent/child rows through EmbeddedRemote vs
   the same rows written straight into a SQLite file with executemany.
3. Download: a second device pulling those 10k rows vs a raw SELECT of the
   remote's documents plus executemany into a local table.

usage: python bench/bench_core.py [--rows N] [--runs R] [--upload-rows U] [--download-rows D]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import peewee
from bench_scale import Item  # the same synced table as the scale bench

from replicator import EmbeddedRemote, Replicator, SyncModel


class SyncItem(SyncModel):
    name = peewee.TextField()
    qty = peewee.IntegerField()

    class Meta:
        table_name = "item"


class PlainItem(peewee.Model):
    id = peewee.CharField(primary_key=True, max_length=36)
    name = peewee.TextField()
    qty = peewee.IntegerField()

    class Meta:
        table_name = "item"


class Parent(SyncModel):
    name = peewee.TextField()


class Child(SyncModel):
    parent = peewee.ForeignKeyField(Parent, on_delete="CASCADE")
    text = peewee.TextField()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def local_writes(directory: Path, n: int, runs: int) -> None:
    """Inserts, updates of those (dirty) rows and updates of synced (clean) rows, each
    as the ratio SyncModel/plain over ``runs`` runs: fresh files, order alternating."""
    ratios: dict[str, list[float]] = {"inserts": [], "updates": [], "updates of clean rows": []}

    def run(kind: str, r: int) -> dict[str, float]:
        ids = [str(uuid.uuid4()) for _ in range(n)]
        db = peewee.SqliteDatabase(str(directory / f"{kind}{r}.db"))
        model: type[peewee.Model] = PlainItem if kind == "plain" else SyncItem
        device = None
        if kind == "plain":
            with db.bind_ctx([PlainItem]):
                db.create_tables([PlainItem])
        else:
            device = Replicator(db, [SyncItem], EmbeddedRemote(directory / f"r{r}.db"))
        out = {}
        with db.bind_ctx([model]):
            with db.atomic():
                out["inserts"] = timed(
                    lambda: [
                        model.create(id=pk, name=f"item {i}", qty=i) for i, pk in enumerate(ids)
                    ]
                )

            def updates(step: int) -> float:
                with db.atomic():
                    return timed(
                        lambda: [
                            model.update(qty=i + step).where(model.id == pk).execute()
                            for i, pk in enumerate(ids)
                        ]
                    )

            out["updates"] = updates(1)
            if device is not None:  # as after a sync: every row clean
                with device.local.applying():
                    db.execute_sql('UPDATE item SET "isDirty" = 0')
            out["updates of clean rows"] = updates(2)
        db.close()
        return out

    run("plain", -1), run("sync", -1)  # warm up
    for r in range(runs):
        order = ["plain", "sync"] if r % 2 == 0 else ["sync", "plain"]
        got = {kind: run(kind, r) for kind in order}
        for name in ratios:
            ratios[name].append(got["sync"][name] / got["plain"][name])
    print(f"local writes, {n:,} rows, SyncModel time / plain peewee time over {runs} runs")
    for name, values in ratios.items():
        print(f"  {name:<22} min {min(values):.2f}x  median {statistics.median(values):.2f}x")


def sync_rows(directory: Path, parents: int, children_each: int) -> None:
    remote = EmbeddedRemote(directory / "remote.db")
    db = peewee.SqliteDatabase(str(directory / "a.db"), pragmas={"foreign_keys": 1})
    device = Replicator(db, [Parent, Child], remote, device_name="a")
    with device.bound(), db.atomic():
        for i in range(parents):
            p = Parent.create(name=f"parent {i}")
            for j in range(children_each):
                Child.create(parent=p, text=f"child {i}.{j}")
    total = parents * (1 + children_each)
    rows = [
        (t, r[0], json.dumps(dict(zip(cols, r, strict=True))))
        for t, cols in (
            ("parent", ["id", "name", "createdOn", "updatedOn", "updatedBy"]),
            ("child", ["id", "parent_id", "text", "createdOn", "updatedOn", "updatedBy"]),
        )
        for r in db.execute_sql(f'SELECT {", ".join(cols)} FROM "{t}"').fetchall()
    ]

    def raw_upload() -> None:
        conn = sqlite3.connect(directory / "raw.db", isolation_level=None)
        conn.execute(
            "CREATE TABLE docs (collection, id, data, seq INTEGER, PRIMARY KEY (collection, id))"
        )
        for start in range(0, len(rows), 499):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO docs VALUES (?, ?, ?, 0)", rows[start : start + 499])
            conn.execute("COMMIT")
        conn.close()

    raw_up = timed(raw_upload)
    report = None

    def engine_upload() -> None:
        nonlocal report
        report = device.sync()

    eng_up = timed(engine_upload)
    assert report is not None and report.total_uploaded == total, report

    def raw_download() -> None:
        src = sqlite3.connect(directory / "remote.db")
        dst = sqlite3.connect(directory / "raw-local.db", isolation_level=None)
        dst.execute("CREATE TABLE item (id PRIMARY KEY, data)")
        cursor = 0
        while True:
            page = src.execute(
                "SELECT id, data, seq FROM docs WHERE seq > ? ORDER BY seq LIMIT 500", (cursor,)
            ).fetchall()
            if not page:
                break
            dst.execute("BEGIN")
            dst.executemany("INSERT INTO item VALUES (?, ?)", [(r[0], r[1]) for r in page])
            dst.execute("COMMIT")
            cursor = page[-1][2]
        src.close()
        dst.close()

    raw_down = timed(raw_download)
    db_b = peewee.SqliteDatabase(str(directory / "b.db"), pragmas={"foreign_keys": 1})
    b = Replicator(db_b, [Parent, Child], remote, device_name="b")
    down_report = None

    def engine_download() -> None:
        nonlocal down_report
        down_report = b.sync()

    eng_down = timed(engine_download)
    assert down_report is not None and down_report.total_downloaded == total
    print(f"sync of {total} dirty parent/child rows through EmbeddedRemote")
    print(
        f"  upload:   raw executemany {raw_up:.2f}s  engine {eng_up:.2f}s"
        f"  ratio {eng_up / raw_up:.2f}x"
    )
    print(f"            {report.usage.writes} writes, {report.usage.reads} reads")
    print(
        f"  download: raw select+executemany {raw_down:.2f}s  engine {eng_down:.2f}s"
        f"  ratio {eng_down / raw_down:.2f}x"
    )
    print(f"            {down_report.usage.reads} reads, {down_report.usage.writes} writes")


ITEM_COLS = ["id", "name", "body", "qty", "createdOn", "updatedOn", "updatedBy"]


def _filled(path: Path, remote: EmbeddedRemote, n: int) -> Replicator:
    device = Replicator(peewee.SqliteDatabase(str(path)), [Item], remote, device_name=path.stem)
    with device.bound(), device.database.atomic():
        for batch in peewee.chunked(range(n), 200):
            Item.insert_many(
                [{"name": f"i{i}", "body": "b" * 100, "qty": i} for i in batch]
            ).execute()
    return device


def sync_vs_raw(directory: Path, up_rows: int, down_rows: int, runs: int) -> None:
    """The engine against the same data moved by hand, in the same run (order alternating):

    * upload of ``up_rows`` dirty rows vs reading them, encoding each as JSON,
      writing them into a copy of the remote's table in 499-row transactions,
      and writing the base table and clearing ``isDirty`` locally;
    * first download of ``down_rows`` rows vs paging the remote's documents,
      decoding each and ``executemany`` into the synced table's columns.
    """
    ratios: dict[str, list[float]] = {"upload": [], "download": []}
    source = EmbeddedRemote(directory / "down-remote.db")
    _filled(directory / "down-src.db", source, down_rows).sync()

    def raw_download(r: int) -> float:
        dst = sqlite3.connect(directory / f"raw-down{r}.db", isolation_level=None)
        dst.execute(
            "CREATE TABLE item (id TEXT PRIMARY KEY, name TEXT, body TEXT, qty INTEGER,"
            ' "createdOn" TEXT, "updatedOn" TEXT, "updatedBy" TEXT, "isDirty" INTEGER,'
            ' "serverId" TEXT, "syncRev" INTEGER)'
        )
        start = time.perf_counter()
        src = sqlite3.connect(directory / "down-remote.db")
        cursor = 0
        while page := src.execute(
            "SELECT id, data, seq FROM docs WHERE collection = 'item' AND seq > ?"
            " ORDER BY seq LIMIT 500",
            (cursor,),
        ).fetchall():
            values = []
            for doc_id, text, _ in page:
                d = json.loads(text)
                values.append((*[d.get(c) for c in ITEM_COLS[1:]], doc_id, 0, doc_id, 0))
            dst.execute("BEGIN")
            dst.executemany(
                'INSERT INTO item (name, body, qty, "createdOn", "updatedOn", "updatedBy",'
                ' id, "isDirty", "serverId", "syncRev") VALUES (?,?,?,?,?,?,?,?,?,?)',
                values,
            )
            dst.execute("COMMIT")
            cursor = page[-1][2]
        src.close()
        elapsed = time.perf_counter() - start
        dst.close()
        return elapsed

    def engine_download(r: int) -> float:
        device = Replicator(
            peewee.SqliteDatabase(str(directory / f"down{r}.db")), [Item], source, device_name="b"
        )
        elapsed = timed(device.sync)
        device.database.close()
        return elapsed

    def raw_upload(r: int) -> float:
        device = _filled(
            directory / f"raw-up{r}.db", EmbeddedRemote(directory / f"x{r}.db"), up_rows
        )
        db = device.database
        remote = sqlite3.connect(directory / f"raw-up-remote{r}.db", isolation_level=None)
        remote.execute(
            "CREATE TABLE docs (collection TEXT, id TEXT, data TEXT, seq INTEGER UNIQUE,"
            " PRIMARY KEY (collection, id))"
        )
        names = ", ".join(f'"{c}"' for c in ITEM_COLS)
        start = time.perf_counter()
        rows = db.execute_sql(f'SELECT {names} FROM item WHERE "isDirty" = 1').fetchall()
        seq = 0
        for at in range(0, len(rows), 499):
            chunk = rows[at : at + 499]
            docs = []
            for row in chunk:
                seq += 1
                docs.append(
                    ("item", row[0], json.dumps(dict(zip(ITEM_COLS, row, strict=True))), seq)
                )
            remote.execute("BEGIN IMMEDIATE")
            remote.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", docs)
            remote.execute("COMMIT")
            with device.local.applying():
                db.connection().executemany(
                    "INSERT INTO replicator_base (collection, id, version, data) VALUES (?,?,?,?)",
                    [(c, i, str(q), d) for c, i, d, q in docs],
                )
                db.connection().executemany(
                    'UPDATE item SET "isDirty" = 0, "serverId" = id WHERE id = ?',
                    [(row[0],) for row in chunk],
                )
        elapsed = time.perf_counter() - start
        remote.close()
        db.close()
        return elapsed

    def engine_upload(r: int) -> float:
        device = _filled(
            directory / f"up{r}.db", EmbeddedRemote(directory / f"up-remote{r}.db"), up_rows
        )
        elapsed = timed(device.sync)
        device.database.close()
        return elapsed

    raw_download(-1), engine_download(-1)  # warm up
    for r in range(runs):
        pairs = {
            "upload": (raw_upload, engine_upload),
            "download": (raw_download, engine_download),
        }
        for name, (raw, engine) in pairs.items():
            if r % 2:
                e, w = engine(r), raw(r)
            else:
                w, e = raw(r), engine(r)
            ratios[name].append(e / w)
    print(f"sync vs the same work by hand, over {runs} runs (engine time / raw time)")
    print(
        f"  upload of {up_rows:,} rows    min {min(ratios['upload']):.2f}x"
        f"  median {statistics.median(ratios['upload']):.2f}x"
    )
    print(
        f"  download of {down_rows:,} rows min {min(ratios['download']):.2f}x"
        f"  median {statistics.median(ratios['download']):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--parents", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--upload-rows", type=int, default=10_000)
    parser.add_argument("--download-rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local_writes(Path(tmp), args.rows, args.runs)
        sync_vs_raw(Path(tmp), args.upload_rows, args.download_rows, args.runs)
        sync_rows(Path(tmp), args.parents, 4)


if __name__ == "__main__":
    main()
