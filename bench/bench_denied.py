"""What isolating writes the rules refuse costs, as ratios against the same upload with
none refused, in the same run.

An upload of ``--rows`` new notes (one batch) to the embedded store behind a wrapper
that refuses, as Firestore does, a whole batch holding a forbidden write; each push
waits ``--latency`` ms first (a round trip). Three uploads are timed, in alternating
order, after a warm-up of each: none refused (the raw work), one refused in the middle,
and ``--denied`` refused spread over the batch. Printed: the pushes each made, the
time ratio against none refused (min/median over ``--runs``), and the bound
``1 + 2·log2(rows)`` pushes for one refused write.

usage: python bench/bench_denied.py [--rows N] [--denied K] [--latency MS] [--runs R]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import peewee

from replicator import AccessDeniedError, EmbeddedRemote, Replicator, SyncModel
from replicator.testing import FaultyRemote


class Note(SyncModel):
    title = peewee.TextField()

    class Meta:
        table_name = "note"


def upload(place: Path, rows: int, forbidden: set[int], latency: float) -> tuple[float, int]:
    """(seconds, pushes) of one device's first upload of ``rows`` notes."""
    remote = FaultyRemote(EmbeddedRemote(place / "remote.db"))
    bad = {f"n{i:05d}" for i in forbidden}

    def rules(writes: Any, device: Any) -> None:
        time.sleep(latency)
        if any(w.id in bad for w in writes):
            raise AccessDeniedError("refused")

    remote.hooks["push"] = rules
    db = peewee.SqliteDatabase(str(place / "phone.db"))
    rep = Replicator(db, [Note], remote, device_name="phone")
    rep.sync()  # first contact: the clock measured, the device registered
    with rep.bound(), db.atomic():
        Note.insert_many([{"id": f"n{i:05d}", "title": "x"} for i in range(rows)]).execute()
    remote.calls.clear()
    started = time.perf_counter()
    report = rep.sync()
    took = time.perf_counter() - started
    assert len(report.denied) == len(forbidden), report.summary()
    rep.close()
    return took, remote.calls.count("push")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--denied", type=int, default=4)
    parser.add_argument("--latency", type=float, default=20.0, help="ms per push")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = {
        "none": set(),
        "one": {args.rows // 2},
        "many": {args.rows * (k + 1) // (args.denied + 1) for k in range(args.denied)},
    }
    times: dict[str, list[float]] = {c: [] for c in cases}
    pushes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.runs + 1):  # run 0 warms each
            order = list(cases) if r % 2 else list(reversed(cases))
            for case in order:
                place = Path(tmp) / f"{case}{r}"
                place.mkdir()
                took, pushes[case] = upload(place, args.rows, cases[case], args.latency / 1000)
                if r:
                    times[case].append(took)
    bound = 1 + 2 * math.ceil(math.log2(args.rows))
    print(f"upload of {args.rows} rows, {args.latency:g} ms a push, {args.runs} runs")
    for case in ("one", "many"):
        ratio = [t / n for t, n in zip(times[case], times["none"], strict=True)]
        print(
            f"{len(cases[case])} refused: {pushes[case]} pushes (none refused: {pushes['none']};"
            f" bound for one: {bound}); time ratio min {min(ratio):.2f}x"
            f" median {statistics.median(ratio):.2f}x"
        )


if __name__ == "__main__":
    main()
