"""A device with a backlog of dirty rows uploads it, for the streaming-upload tests.

usage: python upload_worker.py DIR ROWS [die-after-push N | die-in-journal N]

Prints the process's peak RSS growth (MB) during the upload. With
``die-after-push N`` the process is killed (os._exit) right after the N-th
batch commits, before anything else runs; with ``die-in-journal N`` while the
N-th batch's sent journal is written, when the mark of batch N-1 is written
but not yet committed.
"""

from __future__ import annotations

import os
import sys

import peewee

from replicator import EmbeddedRemote, Replicator
from replicator.testing import FaultyRemote
from tests.models import MODELS, Note


def hwm() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    directory, rows = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 4 else ""
    die_after = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    remote = FaultyRemote(EmbeddedRemote(os.path.join(directory, "remote.db")))
    db = peewee.SqliteDatabase(os.path.join(directory, "device.db"))
    device = Replicator(db, MODELS, remote, device_name="backlog")
    with device.bound(), db.atomic():
        for batch in peewee.chunked(range(rows), 100):
            Note.insert_many(
                [{"title": f"offline note {i}", "body": "x" * 200} for i in batch]
            ).execute()
    if mode == "die-in-journal":
        journals = {"n": 0}
        real_record = device.local.record_sent

        def record_then_maybe_die(entries):
            journals["n"] += 1
            span = real_record(entries)
            if journals["n"] == die_after:
                os._exit(17)
            return span

        device.local.record_sent = record_then_maybe_die
    elif die_after:
        pushes = {"n": 0}
        real = remote.inner.push

        def push_then_maybe_die(*args, **kwargs):
            result = real(*args, **kwargs)
            pushes["n"] += 1
            if pushes["n"] == die_after:
                os._exit(17)
            return result

        remote.inner.push = push_then_maybe_die
    base = hwm()
    device.sync()
    print(hwm() - base)


if __name__ == "__main__":
    main()
