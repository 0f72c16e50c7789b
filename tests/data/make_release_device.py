"""Makes tests/data/release-0.1.0/: a device's database and its embedded remote as
release 0.1.0 (the per-user layout, before scopes) leaves them; run once, with that
release installed, from the repository's root: ``python tests/data/make_release_device.py``.
The files are committed: the upgrade test opens what the release wrote."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator
from tests.models import MODELS, Comment, Note

HERE = Path(__file__).resolve().parent / "release-0.1.0"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for name in ("device.db", "other.db", "remote.db"):
        (HERE / name).unlink(missing_ok=True)
    remote = EmbeddedRemote(HERE / "remote.db")
    other_db = peewee.SqliteDatabase(str(HERE / "other.db"), pragmas={"foreign_keys": 1})
    other = Replicator(other_db, MODELS, remote, device_name="laptop")
    with other.bound():
        for n in range(3):
            note = Note.create(title=f"from the laptop {n}")
            Comment.create(note=note, text="a comment")
    other.sync()
    db = peewee.SqliteDatabase(str(HERE / "device.db"), pragmas={"foreign_keys": 1})
    device = Replicator(db, MODELS, remote, device_name="phone")
    with device.bound():
        kept = Note.create(title="synced from the phone")
        gone = Note.create(title="deleted before the upgrade")
    device.sync()
    with device.bound():
        Note.create(title="written offline, not uploaded")
        kept.title = "edited offline"
        kept.save()
        gone.delete_instance()
    for database in (db, other_db):
        database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        database.close()
    (HERE / "other.db").unlink()
    with sqlite3.connect(HERE / "remote.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for leftover in HERE.glob("*.db-*"):
        leftover.unlink()


if __name__ == "__main__":
    main()
