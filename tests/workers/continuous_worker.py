"""An app writing notes and comments while continuous sync runs, until it is killed.

usage: continuous_worker.py PLACE ROUND
Prints ``W id`` after each committed write and ``S`` after each sync that ended.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SyncStatus
from tests.models import MODELS, Comment, Note


def main(place: Path, round_: str) -> None:
    remote = EmbeddedRemote(place / "remote.db")
    db = peewee.SqliteDatabase(str(place / "app.db"), pragmas={"foreign_keys": 1}, timeout=30)
    app = Replicator(db, MODELS, remote, device_name="app", page_size=7)
    last: list[object] = [app.status.last_synced_at]

    def told(s: SyncStatus) -> None:
        if s.last_synced_at != last[0]:
            last[0] = s.last_synced_at
            print("S", flush=True)

    app.on_status(told)
    app.start(interval=0.1, after_writes=0.02, backoff=(0.05, 0.5))
    rng = random.Random()
    written: list[str] = []
    with app.bound():
        for i in range(10**6):
            with db.atomic():
                if written and rng.random() < 0.3:
                    note_id = rng.choice(written)
                    Note.update(body=f"edit {round_}-{i}").where(Note.id == note_id).execute()
                else:
                    note_id = f"r{round_}-{i}"
                    note = Note.create(id=note_id, title=note_id)
                    Comment.create(note=note, text=f"on {note_id}")
                    written.append(note_id)
            print("W", note_id, flush=True)
            time.sleep(rng.uniform(0, 0.01))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
