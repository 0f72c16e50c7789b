"""A device offline for longer than the tombstone retention catches up without losing
its own edits: "Deletes are remembered for a retention period" in docs/concepts/conflicts.md.

Run: .venv/bin/python examples/offline_past_retention.py [DIRECTORY]

The retention here is one second so the example runs at once; apps keep the
default (90 days) or choose their own.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SyncModel


class Task(SyncModel):
    title = peewee.TextField()
    done = peewee.BooleanField(default=False)


RETENTION = dt.timedelta(seconds=1)


def device(directory: Path, name: str, remote: EmbeddedRemote) -> Replicator:
    db = peewee.SqliteDatabase(str(directory / f"{name}.db"))
    return Replicator(db, [Task], remote, device_name=name, tombstone_retention=RETENTION)


def main(directory: Path) -> None:
    remote = EmbeddedRemote(directory / "remote.db")
    phone, tablet = device(directory, "phone", remote), device(directory, "tablet", remote)
    with phone.bound():
        tasks = [Task.create(title=t) for t in ("buy milk", "call mum", "pay rent")]
    phone.sync()
    tablet.sync()  # the tablet now goes into a drawer, with an edit not yet synced
    with tablet.bound():
        Task.update(done=True).where(Task.id == tasks[1].id).execute()

    with phone.bound():  # meanwhile the phone deletes two tasks
        tasks[0].delete_instance()
        tasks[1].delete_instance()
    phone.sync()
    time.sleep(1.5)  # ... and the retention passes
    # an operator (or the phone's next sync) purges the old tombstones
    subprocess.run(
        [sys.executable, "-m", "replicator", "compact",
         "--embedded", str(remote.path), "--older-than-days", "0.00001"],
        check=True,
    )  # fmt: skip

    report = tablet.sync()  # out of the drawer
    print("tablet:", report.summary())
    for r in report.conflicts:
        print(f"  {r.outcome}: {r.local['title']!r} ({r.strategy})")
    print("phone: ", phone.sync().summary())
    with phone.bound():
        print("phone sees:", sorted((t.title, t.done) for t in Task.select()))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
