"""Two devices share notes through the embedded remote: the getting-started app, end to end.

Run: .venv/bin/python examples/quickstart.py [DIRECTORY]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator, SyncModel


class Note(SyncModel):
    title = peewee.TextField()


class Comment(SyncModel):
    note = peewee.ForeignKeyField(Note, on_delete="CASCADE")
    text = peewee.TextField()


def device(directory: Path, name: str, remote: EmbeddedRemote) -> Replicator:
    db = peewee.SqliteDatabase(str(directory / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, [Note, Comment], remote, device_name=name)


def main(directory: Path) -> None:
    remote = EmbeddedRemote(directory / "remote.db")
    phone, laptop = device(directory, "phone", remote), device(directory, "laptop", remote)

    with phone.bound():
        note = Note.create(title="Shopping")
        Comment.create(note=note, text="eggs")
    print("phone: ", phone.sync().summary())
    print("laptop:", laptop.sync().summary())

    with laptop.bound():
        Note.update(title="Groceries").where(Note.id == note.id).execute()
    print("laptop:", laptop.sync().summary())
    print("phone: ", phone.sync().summary())

    with phone.bound():
        print("phone sees:", [(n.title, [c.text for c in n.comment_set]) for n in Note.select()])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
