"""Outbox benchmarks, printed as ratios against the raw work done in the same run.

1. ``save()`` throughput vs bare sqlite3: the same event serialised with
   ``json.dumps`` and inserted into a table with the same columns and indexes,
   one transaction per event, same journal mode and ``synchronous`` setting.
2. ``save()`` latency (p50, p99) while a flush of a large backlog runs on
   another thread, and without one.
3. Delivery: events per second of ``outbox.sync()`` to a local receiver vs a raw
   loop (select a batch, build the same JSON, gzip, POST with the same httpx
   client, delete the rows).
4. Bytes on the wire: the seed's telemetry event, plain vs gzipped, alone and
   in a batch of 500.

usage: python bench/bench_outbox.py [--events N] [--runs R]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from replicator import Outbox
from replicator.testing import SEED_EVENTS, EventReceiver

TELEMETRY = json.loads(SEED_EVENTS["TELEMETRY"])


def event(i: int) -> dict:
    return {**TELEMETRY, "mid": str(uuid.UUID(int=i)), "ets": 1573470364698 + i}


def config(url: str) -> list[dict]:
    return [
        {
            "type": "TELEMETRY",
            "api": {"method": "post", "host": url, "path": "v1/telemetry", "params": ""},
            "autoSync": None,
            "shouldBatch": True,
        }
    ]


def rates(label: str, n: int, ours: list[float], raw: list[float], name: str, goal: float) -> None:
    """Print throughput per second and the ratio of ours to the raw work, run by run."""
    ratio = [r / o for r, o in zip(raw, ours, strict=True)]
    print(
        f"{label}: {n / statistics.median(ours):.0f}/s vs {name}"
        f" {n / statistics.median(raw):.0f}/s; ratio median {statistics.median(ratio):.2f}x"
        f" (min {min(ratio):.2f}x) [goal >= {goal}x]"
    )


def bare_table(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(
        "CREATE TABLE events (_id INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL,"
        " data TEXT NOT NULL, timestamp REAL NOT NULL, priority INTEGER NOT NULL DEFAULT 0);"
        "CREATE UNIQUE INDEX events_type_key ON events (type, key);"
        "CREATE INDEX events_order ON events (type, priority DESC, _id);"
    )
    return conn


def save_throughput(directory: Path, n: int, runs: int, url: str) -> None:
    events = [event(i) for i in range(n)]
    times: dict[str, list[float]] = {"bare": [], "save": []}
    for r in range(runs + 1):  # run 0 warms both
        order = ["bare", "save"] if r % 2 else ["save", "bare"]
        for kind in order:
            path = directory / f"{kind}-{r}.db"
            if kind == "bare":
                conn = bare_table(path)
                start = time.perf_counter()
                for i, e in enumerate(events):
                    conn.execute(
                        "INSERT INTO events (type, key, data, timestamp, priority)"
                        " VALUES (?, ?, ?, ?, ?)",
                        ("TELEMETRY", str(i), json.dumps(e), time.time(), 0),
                    )
                took = time.perf_counter() - start
                conn.close()
            else:
                outbox = Outbox(path)
                outbox.init(config(url))
                start = time.perf_counter()
                for e in events:
                    outbox.save("TELEMETRY", e)
                took = time.perf_counter() - start
                outbox.close()
            if r:
                times[kind].append(took)
    rates(f"save() throughput, {n} events", n, times["save"], times["bare"], "bare", 0.7)


def save_latency(directory: Path, n: int, url: str) -> None:
    for label, flushing in (("idle", False), ("during a flush", True)):
        outbox = Outbox(directory / f"latency-{flushing}.db")
        outbox.init(config(url))
        for i in range(n):
            outbox.save("TELEMETRY", event(i))
        flusher = threading.Thread(target=outbox.sync, args=("TELEMETRY",))
        if flushing:
            flusher.start()
        samples = []
        for i in range(2000):
            start = time.perf_counter()
            outbox.save("TELEMETRY", event(n + i))
            samples.append(time.perf_counter() - start)
        if flushing:
            flusher.join()
        outbox.close()
        samples.sort()
        p50 = samples[len(samples) // 2] * 1e6
        p99 = samples[int(len(samples) * 0.99)] * 1e6
        print(f"save() latency {label}: p50 {p50:.0f} us, p99 {p99:.0f} us")


def delivery(directory: Path, n: int, runs: int, url: str) -> None:
    times: dict[str, list[float]] = {"raw": [], "outbox": []}
    client = httpx.Client()
    for r in range(runs + 1):
        order = ["raw", "outbox"] if r % 2 else ["outbox", "raw"]
        for kind in order:
            path = directory / f"deliver-{kind}-{r}.db"
            if kind == "raw":
                conn = bare_table(path)
                conn.executemany(
                    "INSERT INTO events (type, key, data, timestamp, priority)"
                    " VALUES ('TELEMETRY', ?, ?, 0, 0)",
                    [(uuid.uuid4().hex, json.dumps(event(i))) for i in range(n)],
                )
                start = time.perf_counter()
                while True:
                    rows = conn.execute(
                        "SELECT _id, key, data, timestamp, priority FROM events"
                        " WHERE type = 'TELEMETRY' ORDER BY priority DESC, _id LIMIT 500"
                    ).fetchall()
                    if not rows:
                        break
                    msg_id = uuid.uuid4().hex
                    body = (
                        f'{{"msg_id":"{msg_id}","type":"TELEMETRY","events":['
                        + ",".join(
                            f'{{"key":"{k}","timestamp":{t},"priority":{p},"data":{d}}}'
                            for _, k, d, t, p in rows
                        )
                        + "]}"
                    ).encode()
                    response = client.post(
                        url + "/v1/telemetry",
                        content=gzip.compress(body, compresslevel=6),
                        headers={"Content-Encoding": "gzip", "X-Message-Id": msg_id},
                    )
                    response.raise_for_status()
                    conn.execute(
                        "DELETE FROM events WHERE _id IN (SELECT value FROM json_each(?))",
                        (json.dumps([row[0] for row in rows]),),
                    )
                took = time.perf_counter() - start
                conn.close()
            else:
                from replicator.stores.http import HttpSink

                outbox = Outbox(path)
                outbox.init(
                    config(url),
                    sinks={"TELEMETRY": HttpSink("POST", url + "/v1/telemetry", client=client)},
                )
                for i in range(n):
                    outbox.save("TELEMETRY", event(i))
                start = time.perf_counter()
                report = outbox.sync("TELEMETRY")
                took = time.perf_counter() - start
                assert report.events_sent == n, report
                outbox.close()
            if r:
                times[kind].append(took)
    rates(f"delivery of {n} events", n, times["outbox"], times["raw"], "raw", 0.8)


def wire_bytes() -> None:
    one = SEED_EVENTS["TELEMETRY"].encode()
    batch = json.dumps({"events": [event(i) for i in range(500)]}).encode()
    for label, body in (("one telemetry event", one), ("a batch of 500", batch)):
        packed = len(gzip.compress(body, compresslevel=6))
        print(
            f"bytes on the wire, {label}: {len(body)} plain, {packed} gzipped"
            f" ({len(body) / packed:.1f}x smaller)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EventReceiver() as receiver:
        directory = Path(tmp)
        save_throughput(directory, args.events, args.runs, receiver.url)
        save_latency(directory, args.events, receiver.url)
        delivery(directory, args.events, args.runs, receiver.url)
        wire_bytes()


if __name__ == "__main__":
    main()
