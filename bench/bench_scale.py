"""Does a sync cost what changed, or what is stored? The same syncs on a small and a large device.

For each size (default 10,000 and 100,000 rows; ``--large 1000000`` for the
issue's pair) a device uploads its rows through an EmbeddedRemote and a second
device downloads them; then, each timed over ``--runs`` runs (min and median):

* idle: a sync with nothing new anywhere;
* upload: 100 rows edited, then a sync;
* download: the other device's sync that fetches those 100 rows;
* idle with history: a small device that has deleted ``size`` rows long ago.

The ratio large/small is what matters (goal <= 1.5: cost follows the changes).
Also printed: the bookkeeping-to-data size ratio of a synced database (dbstat:
replicator's tables and indexes over the synced table), and the share of the
synced table its ``syncVersion`` column takes.

usage: python bench/bench_scale.py [--small N] [--large N] [--runs R]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SyncModel


class Item(SyncModel):
    name = peewee.TextField()
    body = peewee.TextField()
    qty = peewee.IntegerField()

    class Meta:
        table_name = "item"


def _device(path: Path, remote: EmbeddedRemote, name: str) -> Replicator:
    db = peewee.SqliteDatabase(str(path), pragmas={"journal_mode": "wal", "synchronous": 1})
    return Replicator(db, [Item], remote, device_name=name)


def _fill(device: Replicator, rows: int) -> None:
    with device.bound(), device.database.atomic():
        for batch in peewee.chunked(range(rows), 200):
            Item.insert_many(
                [{"name": f"item {i}", "body": "b" * 100, "qty": i} for i in batch]
            ).execute()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(size: int, runs: int, tmp: Path) -> dict[str, list[float]]:
    remote = EmbeddedRemote(tmp / f"remote-{size}.db")
    a = _device(tmp / f"a-{size}.db", remote, "a")
    b = _device(tmp / f"b-{size}.db", remote, "b")
    _fill(a, size)
    a.sync()
    b.sync()
    a.sync()
    out: dict[str, list[float]] = {"idle": [], "upload 100": [], "download 100": []}
    with a.bound():
        ids = [r.id for r in Item.select(Item.id).order_by(Item.id).limit(100 * runs)]
    for run in range(runs):
        out["idle"].append(_timed(a.sync))
        with a.bound():
            chosen = ids[run * 100 : (run + 1) * 100]
            Item.update(qty=Item.qty + 1).where(Item.id.in_(chosen)).execute()
        out["upload 100"].append(_timed(a.sync))
        out["download 100"].append(_timed(b.sync))
    # a small device with a long history of acknowledged deletes
    hist_remote = EmbeddedRemote(tmp / f"hremote-{size}.db")
    h = _device(tmp / f"h-{size}.db", hist_remote, "h")
    _fill(h, size)
    h.sync()
    with h.bound():
        Item.delete().where(Item.qty >= 1000).execute()  # keep 1,000 rows
    h.sync()
    out["idle, deletes kept"] = [_timed(h.sync) for _ in range(runs)]
    out["bookkeeping/data"] = [_bookkeeping(a.database)]
    out["version column/data"] = [_version_column(a.database)]
    for device in (a, b, h):
        device.database.close()
    return out


def _bookkeeping(db: peewee.SqliteDatabase) -> float:
    sizes = dict(db.execute_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
    data = sum(v for k, v in sizes.items() if k == "item" or k.startswith("sqlite_autoindex_item"))
    ours = sum(v for k, v in sizes.items() if k.startswith(("replicator_", "DownloadedTracker"))
               or "replicator" in k)  # fmt: skip
    return ours / data


def _version_column(db: peewee.SqliteDatabase) -> float:
    """The share of the user table the remote versions (``syncVersion``) take."""
    (size,) = db.execute_sql(
        "SELECT SUM(pgsize) FROM dbstat WHERE name = 'item' OR name LIKE 'sqlite_autoindex_item%'"
    ).fetchone()
    (versions,) = db.execute_sql('SELECT SUM(LENGTH("syncVersion") + 1) FROM item').fetchone()
    return float(versions or 0) / size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="replicator-scale-"))
    try:
        small = measure(args.small, args.runs, tmp)
        large = measure(args.large, args.runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'sync':<22} {args.small:>9,} rows {args.large:>11,} rows   ratio (median; min)")
    for name in small:
        if name.endswith("/data"):
            continue
        s, big = small[name], large[name]
        print(
            f"{name:<22} {statistics.median(s):>9.3f} s {statistics.median(big):>12.3f} s"
            f"   {statistics.median(big) / statistics.median(s):5.2f}x; {min(big) / min(s):5.2f}x"
        )
    print(
        f"bookkeeping / user data on a synced database: {small['bookkeeping/data'][0]:.0%}"
        f" ({args.small:,} rows), {large['bookkeeping/data'][0]:.0%} ({args.large:,} rows);"
        f" the syncVersion column within the user table: {large['version column/data'][0]:.0%}"
    )


if __name__ == "__main__":
    main()
