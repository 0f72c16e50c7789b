"""Status and continuous sync, printed as ratios against work done in the same run.

1. What continuous sync costs an app that writes: N notes, one transaction each,
   while continuous sync runs idle (interval of an hour, no sync after writes: the
   sync thread looks at ``PRAGMA data_version`` every 0.1 s and counts the pending
   rows after each commit it notices) vs the same writes with no continuous sync.
2. What the pending count costs as the database grows: ``pending_count()`` with 10
   rows pending among ``--small`` synced rows vs among ``--large``; a count that
   walked the table would cost ``large / small`` times more.

usage: python bench/bench_status.py [--writes N] [--small S] [--large L] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SyncModel


class Note(SyncModel):
    title = peewee.TextField()

    class Meta:
        table_name = "note"


def device(place: Path, name: str) -> Replicator:
    db = peewee.SqliteDatabase(str(place / f"{name}.db"), pragmas={"journal_mode": "wal"})
    return Replicator(db, [Note], EmbeddedRemote(place / "remote.db"), device_name=name)


def writes(rep: Replicator, n: int, prefix: str) -> float:
    started = time.perf_counter()
    with rep.bound():
        for i in range(n):
            Note.create(id=f"{prefix}-{i}", title="x")
    return time.perf_counter() - started


def write_cost(place: Path, n: int, runs: int) -> None:
    rep = device(place, "writer")
    times: dict[str, list[float]] = {"alone": [], "continuous": []}
    for r in range(runs + 1):  # run 0 warms both
        order = ["alone", "continuous"] if r % 2 else ["continuous", "alone"]
        for how in order:
            if how == "continuous":
                rep.start(interval=3600)
            took = writes(rep, n, f"{how}{r}")
            rep.stop()
            if r:
                times[how].append(took)
    rep.close()
    ratio = [c / a for c, a in zip(times["continuous"], times["alone"], strict=True)]
    print(
        f"{n} writes: {n / statistics.median(times['alone']):.0f}/s alone,"
        f" {n / statistics.median(times['continuous']):.0f}/s with continuous sync running;"
        f" time ratio median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x)"
        " [goal <= 1.1x]"
    )


def count_cost(place: Path, sizes: tuple[int, int], runs: int) -> None:
    reps = []
    for size in sizes:
        rep = device(place, f"count{size}")
        with rep.bound(), rep.database.atomic():
            Note.insert_many([{"id": f"s{i}", "title": "x"} for i in range(size)]).execute()
        rep.sync()
        writes(rep, 10, "pending")
        reps.append(rep)
    took: list[list[float]] = [[], []]
    for r in range(runs + 1):  # run 0 warms both
        for k in [0, 1] if r % 2 else [1, 0]:
            started = time.perf_counter()
            for _ in range(500):
                reps[k].pending_count()
            if r:
                took[k].append((time.perf_counter() - started) / 500)
    for rep in reps:
        rep.close()
    ratio = [big / small for small, big in zip(took[0], took[1], strict=True)]
    print(
        f"pending count, 10 pending: {statistics.median(took[0]) * 1e6:.0f} us among"
        f" {sizes[0]:,} rows, {statistics.median(took[1]) * 1e6:.0f} us among {sizes[1]:,};"
        f" ratio median {statistics.median(ratio):.2f}x (min {min(ratio):.2f}x) for"
        f" {sizes[1] / sizes[0]:.0f}x the rows [goal ~1x]"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_cost(Path(tmp), args.writes, args.runs)
        count_cost(Path(tmp), (args.small, args.large), args.runs)


if __name__ == "__main__":
    main()
