"""The demo behind ``replicator demo``: the whole design, with four devices.

A phone, a tablet and a laptop each keep their own SQLite file and sync through
one EmbeddedRemote file. They create, edit and delete notes and comments while
offline, including an edit of the same note on two devices, then sync in an
interleaved order; at the end every device holds the same rows. Conflicts are
merged field by field (``FieldMerge``), so the phone's edit of the body and the
tablet's edit of the title of the same note both survive. Then the device with
the freshest data publishes an encrypted snapshot into a directory blob store
(the Big Brother rule), the tablet writes once more, and a fourth device, a
desktop, logs in: it restores the snapshot and downloads only what came after.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peewee

from ..engine import Replicator
from ..model import SyncModel
from ..report import _counted
from ..snapshots.crypto import Passphrase
from ..stores.directory import DirectoryBlobStore
from ..stores.embedded import EmbeddedRemote
from ..strategies.conflict import FieldMerge


class Note(SyncModel):
    title = peewee.TextField()
    body = peewee.TextField(default="")

    class Meta:
        table_name = "note"


class Comment(SyncModel):
    note = peewee.ForeignKeyField(Note, on_delete="CASCADE", backref="comments")
    text = peewee.TextField()

    class Meta:
        table_name = "comment"


MODELS = [Note, Comment]

OUTCOMES = {
    "local": "kept this device's version",
    "remote": "took the other device's version",
    "merged": "merged both versions field by field",
    "deleted": "deleted it: it or its parent was deleted elsewhere (deletes win)",
}


#: what the demo's snapshots are sealed with (a real app asks its user)
PASSPHRASE = "correct horse battery staple"


def open_device(
    directory: Path, name: str, remote: EmbeddedRemote, blobs: DirectoryBlobStore | None = None
) -> Replicator:
    db = peewee.SqliteDatabase(str(directory / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(
        db,
        MODELS,
        remote,
        blobs,
        Passphrase(PASSPHRASE) if blobs is not None else None,
        device_name=name,
        app_version="demo",
        conflict_strategy=FieldMerge(),
    )


def contents(device: Replicator) -> list[tuple[Any, ...]]:
    """What a user sees on the device: the notes with their comments, by id."""
    with device.bound():
        rows: list[tuple[Any, ...]] = [
            ("note", n.id, n.title, n.body) for n in Note.select().order_by(Note.id)
        ]
        rows += [
            ("comment", c.id, c.__data__["note"], c.text)
            for c in Comment.select().order_by(Comment.id)
        ]
    return rows


def run(directory: Path | None = None, echo: Callable[[str], None] = print) -> bool:
    """Play the scenario; return True when all devices converged."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="replicator-demo-") as tmp:
            return run(Path(tmp), echo)
    directory.mkdir(parents=True, exist_ok=True)
    remote = EmbeddedRemote(directory / "remote.db")
    phone, tablet, laptop = (
        open_device(directory, n, remote) for n in ("phone", "tablet", "laptop")
    )
    names = {id(phone): "phone", id(tablet): "tablet", id(laptop): "laptop"}

    def sync(device: Replicator) -> None:
        report = device.sync()
        echo(f"  {names[id(device)]:<7} sync: {report.summary()}")
        for c in report.conflicts:
            echo(f"          conflict on {c.collection}/{c.id[:8]}: {OUTCOMES[c.outcome]}")

    echo("1. offline: the phone writes a shopping list, the laptop a todo list")
    with phone.bound():
        shopping = Note.create(title="Shopping", body="milk, eggs")
        Comment.create(note=shopping, text="the organic eggs")
        Comment.create(note=shopping, text="and bread")
    with laptop.bound():
        todo = Note.create(title="Todo", body="file taxes")
        Comment.create(note=todo, text="due on Friday")

    echo("2. they come online one after the other")
    for device in (phone, laptop, tablet, phone):
        sync(device)

    echo("3. offline again: phone and tablet edit the same note, the laptop deletes a comment,")
    echo("   the tablet comments on the todo list and the phone deletes it (with its comments)")
    with phone.bound():
        Note.update(body="milk, eggs, coffee").where(Note.id == shopping.id).execute()
        Note.delete().where(Note.id == todo.id).execute()
    with tablet.bound():
        Note.update(title="Groceries").where(Note.id == shopping.id).execute()
        Comment.create(note=todo.id, text="I can help with that")
    with laptop.bound():
        laptop.database.execute_sql("DELETE FROM comment WHERE text = ?", ("and bread",))

    echo("4. they sync in an interleaved order")
    for device in (tablet, laptop, phone, tablet, laptop, phone):
        sync(device)

    views = {
        name: contents(d)
        for name, d in zip(("phone", "tablet", "laptop"), (phone, tablet, laptop), strict=True)
    }
    converged = views["phone"] == views["tablet"] == views["laptop"]
    echo("5. result")
    for row in views["phone"]:
        kind, rid, *rest = row
        echo(f"  {kind:<8} {rid[:8]}  " + " | ".join(str(v)[:30] for v in rest))
    dirty = {
        name: sum(d.dirty_counts().values())
        for name, d in zip(views, (phone, tablet, laptop), strict=True)
    }
    echo(f"  dirty rows left: {dirty}")
    echo("all three devices are identical" if converged else "DEVICES DIFFER")

    echo("6. the phone, which synced last and holds the freshest data, publishes an encrypted")
    echo("   snapshot of its database (a directory blob store: no credentials needed)")
    blobs = DirectoryBlobStore(directory / "blobs")
    phone.database.close()
    phone = open_device(directory, "phone", remote, blobs)
    names[id(phone)] = "phone"
    published = phone.sync()
    echo(f"  phone   sync: {published.summary()}")

    echo("7. the tablet writes one more note after the snapshot")
    with tablet.bound():
        Note.create(title="Call the plumber")
    sync(tablet)

    echo("8. a fourth device, a desktop, logs in: it restores the snapshot, then downloads")
    echo("   only what the snapshot lacks")
    desktop = open_device(directory, "desktop", remote, blobs)
    names[id(desktop)] = "desktop"
    login = desktop.login()
    echo(f"  desktop login: {login.summary()}")
    fresh = contents(desktop) == contents(tablet)
    with desktop.bound():
        held = _counted({"note": Note.select().count(), "comment": Comment.select().count()})
    echo(f"  the desktop holds {held}, as the others do" if fresh else "DESKTOP DIFFERS")
    for d in (phone, tablet, laptop, desktop):
        d.database.close()
    restored_then_caught_up = (
        published.snapshot is not None
        and login.restored == published.snapshot
        and login.downloaded == {"note": 1}
    )
    return converged and not any(dirty.values()) and fresh and restored_then_caught_up
