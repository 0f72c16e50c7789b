"""One device of the multi-process soak: an app thread writes while the device syncs.

usage: python soak_worker.py DB REMOTE NAME SECONDS OUT_LOG [RETENTION_SECONDS]

The app thread commits, on its own connection, a note with a comment in one
transaction, edits, and deletes (SQLite cascades the comments), as fast as it
can; the main thread syncs in a loop. OUT_LOG gets one JSON line per fact, so
a worker killed at any moment leaves a usable log: ``{"note", "comment"}``
after a creation commits, ``{"deleting"}`` before a delete starts. At the end
the worker syncs until clean and writes ``{"done": syncs}``.
"""

from __future__ import annotations

import datetime
import json
import random
import sqlite3
import sys
import threading
import time
import uuid

import peewee

from replicator import Replicator, ReplicatorError
from replicator.stores.embedded import EmbeddedRemote
from tests.models import MODELS


def main() -> None:
    db_path, remote_path, name, seconds, out = sys.argv[1:6]
    kw = {}
    if len(sys.argv) > 6:
        kw["tombstone_retention"] = datetime.timedelta(seconds=float(sys.argv[6]))
    db = peewee.SqliteDatabase(
        db_path, pragmas={"foreign_keys": 1, "journal_mode": "wal"}, timeout=30
    )
    device = Replicator(db, MODELS, EmbeddedRemote(remote_path), device_name=name, **kw)
    stop = threading.Event()
    log_file = open(out, "a")  # noqa: SIM115 - kept open for the whole run

    def record(fact: dict) -> None:
        log_file.write(json.dumps(fact) + "\n")
        log_file.flush()

    def app() -> None:
        rng = random.Random(name)
        conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            roll = rng.random()
            if roll < 0.6:
                note, comment = str(uuid.uuid4()), str(uuid.uuid4())
                conn.execute("INSERT INTO note (id, title, body) VALUES (?, ?, '')", (note, name))
                conn.execute(
                    "INSERT INTO comment (id, note_id, text) VALUES (?, ?, ?)",
                    (comment, note, name),
                )
                conn.execute("COMMIT")
                record({"note": note, "comment": comment})
                continue
            else:
                ids = [r[0] for r in conn.execute("SELECT id FROM note")]
                if ids:
                    victim = rng.choice(ids)
                    if roll < 0.85:
                        conn.execute("UPDATE note SET body = ? WHERE id = ?", (name, victim))
                    else:
                        record({"deleting": victim})
                        conn.execute("DELETE FROM note WHERE id = ?", (victim,))
            conn.execute("COMMIT")
            time.sleep(rng.random() / 100)
        conn.close()

    writer = threading.Thread(target=app)
    writer.start()
    until = time.monotonic() + float(seconds)
    syncs = 0
    while time.monotonic() < until:
        try:
            device.sync()
            syncs += 1
        except ReplicatorError as exc:
            if not exc.retryable:
                raise
    stop.set()
    writer.join()
    for _ in range(50):
        try:
            device.sync()
            break
        except ReplicatorError as exc:
            if not exc.retryable:
                raise
            time.sleep(0.05)
    record({"done": syncs})
    log_file.close()
    db.close()


if __name__ == "__main__":
    main()
