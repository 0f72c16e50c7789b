"""An asyncio app syncs in the background while its event loop keeps serving.

Two devices of one user: each app runs a loop that keeps handling its own work
(here: a heartbeat), while ``await device.sync_async()`` runs the sync in a worker
thread. Overlapping syncs of one device take turns.

Run: .venv/bin/python examples/async_app.py [DIRECTORY]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SyncModel


class Note(SyncModel):
    title = peewee.TextField()


def device(directory: Path, name: str, remote: EmbeddedRemote) -> Replicator:
    db = peewee.SqliteDatabase(str(directory / f"{name}.db"))
    return Replicator(db, [Note], remote, device_name=name)


async def app(phone: Replicator, laptop: Replicator) -> None:
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.001)
            beats += 1

    beating = asyncio.create_task(heartbeat())
    with phone.bound():
        for i in range(2_000):
            Note.create(title=f"note {i}")
    # the phone's sync and the laptop's run side by side; the loop keeps beating
    up, down = await asyncio.gather(phone.sync_async(), laptop.sync_async())
    again = await laptop.sync_async()  # after the phone's upload landed
    beating.cancel()
    print("phone: ", up.summary())
    print("laptop:", down.summary())
    print("laptop:", again.summary())
    print(f"the event loop ran {beats} heartbeats during the syncs")
    with laptop.bound():
        print("laptop holds", Note.select().count(), "notes")


def main(directory: Path) -> None:
    remote = EmbeddedRemote(directory / "remote.db")
    asyncio.run(app(device(directory, "phone", remote), device(directory, "laptop", remote)))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
