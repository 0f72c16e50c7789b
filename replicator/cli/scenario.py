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
from ..report import SyncReport, counted
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
    """Play the scenario; return True when all devices converged with nothing left
    unsynced, and the desktop restored the published snapshot and caught up."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="replicator-demo-") as tmp:
            return run(Path(tmp), echo)
    directory.mkdir(parents=True, exist_ok=True)
    tour = _Tour(directory, echo)
    shopping, todo = tour.write_lists()
    tour.edit_concurrently(shopping, todo)
    converged = tour.show_result()
    published = tour.publish_snapshot()
    tour.write_after_snapshot()
    logged_in = tour.log_in(published)
    tour.close()
    return converged and logged_in


class _Tour:
    """The scenario's devices by name, each step telling ``echo`` what it does.

    The phone, tablet and laptop share one EmbeddedRemote; the phone reopens with
    the blob store to publish, and the desktop joins last, from the snapshot.
    """

    def __init__(self, directory: Path, echo: Callable[[str], None]) -> None:
        self.directory = directory
        self.echo = echo
        self.remote = EmbeddedRemote(directory / "remote.db")
        self.blobs: DirectoryBlobStore | None = None  # made when the phone publishes
        self.devices = {
            name: open_device(directory, name, self.remote)
            for name in ("phone", "tablet", "laptop")
        }

    def sync(self, name: str) -> None:
        report = self.devices[name].sync()
        self.echo(f"  {name:<7} sync: {report.summary()}")
        for c in report.conflicts:
            self.echo(f"          conflict on {c.collection}/{c.id[:8]}: {OUTCOMES[c.outcome]}")

    def write_lists(self) -> tuple[Note, Note]:
        """Steps 1 and 2: the phone and the laptop write offline, then all come online."""
        phone, laptop = self.devices["phone"], self.devices["laptop"]
        self.echo("1. offline: the phone writes a shopping list, the laptop a todo list")
        with phone.bound():
            shopping = Note.create(title="Shopping", body="milk, eggs")
            Comment.create(note=shopping, text="the organic eggs")
            Comment.create(note=shopping, text="and bread")
        with laptop.bound():
            todo = Note.create(title="Todo", body="file taxes")
            Comment.create(note=todo, text="due on Friday")

        self.echo("2. they come online one after the other")
        for name in ("phone", "laptop", "tablet", "phone"):
            self.sync(name)
        return shopping, todo

    def edit_concurrently(self, shopping: Note, todo: Note) -> None:
        """Steps 3 and 4: conflicting edits offline, then syncs in an interleaved order."""
        phone, tablet, laptop = (self.devices[n] for n in ("phone", "tablet", "laptop"))
        self.echo(
            "3. offline again: phone and tablet edit the same note, the laptop deletes a comment,"
        )
        self.echo(
            "   the tablet comments on the todo list and the phone deletes it (with its comments)"
        )
        with phone.bound():
            Note.update(body="milk, eggs, coffee").where(Note.id == shopping.id).execute()
            Note.delete().where(Note.id == todo.id).execute()
        with tablet.bound():
            Note.update(title="Groceries").where(Note.id == shopping.id).execute()
            Comment.create(note=todo.id, text="I can help with that")
        with laptop.bound():
            laptop.database.execute_sql("DELETE FROM comment WHERE text = ?", ("and bread",))

        self.echo("4. they sync in an interleaved order")
        for name in ("tablet", "laptop", "phone", "tablet", "laptop", "phone"):
            self.sync(name)

    def show_result(self) -> bool:
        """Step 5: whether the three devices hold the same rows and nothing unsynced."""
        names = ("phone", "tablet", "laptop")
        views = {name: contents(self.devices[name]) for name in names}
        converged = views["phone"] == views["tablet"] == views["laptop"]
        self.echo("5. result")
        for row in views["phone"]:
            kind, rid, *rest = row
            self.echo(f"  {kind:<8} {rid[:8]}  " + " | ".join(str(v)[:30] for v in rest))
        dirty = {name: sum(self.devices[name].dirty_counts().values()) for name in names}
        self.echo(f"  dirty rows left: {dirty}")
        self.echo("all three devices are identical" if converged else "DEVICES DIFFER")
        return converged and not any(dirty.values())

    def publish_snapshot(self) -> SyncReport:
        """Step 6: the phone, reopened with the blob store, syncs and publishes."""
        self.echo(
            "6. the phone, which synced last and holds the freshest data, publishes an encrypted"
        )
        self.echo("   snapshot of its database (a directory blob store: no credentials needed)")
        self.blobs = DirectoryBlobStore(self.directory / "blobs")
        self.devices["phone"].database.close()
        phone = open_device(self.directory, "phone", self.remote, self.blobs)
        self.devices["phone"] = phone
        published = phone.sync()
        self.echo(f"  phone   sync: {published.summary()}")
        return published

    def write_after_snapshot(self) -> None:
        """Step 7: a write the snapshot cannot hold."""
        self.echo("7. the tablet writes one more note after the snapshot")
        with self.devices["tablet"].bound():
            Note.create(title="Call the plumber")
        self.sync("tablet")

    def log_in(self, published: SyncReport) -> bool:
        """Step 8: whether the desktop restored ``published`` and then downloaded only
        the note written after it, to hold what the tablet holds."""
        self.echo(
            "8. a fourth device, a desktop, logs in: it restores the snapshot, then downloads"
        )
        self.echo("   only what the snapshot lacks")
        desktop = open_device(self.directory, "desktop", self.remote, self.blobs)
        self.devices["desktop"] = desktop
        login = desktop.login()
        self.echo(f"  desktop login: {login.summary()}")
        fresh = contents(desktop) == contents(self.devices["tablet"])
        with desktop.bound():
            held = counted({"note": Note.select().count(), "comment": Comment.select().count()})
        self.echo(f"  the desktop holds {held}, as the others do" if fresh else "DESKTOP DIFFERS")
        return (
            fresh
            and published.snapshot is not None
            and login.restored == published.snapshot
            and login.downloaded == {"note": 1}
        )

    def close(self) -> None:
        for device in self.devices.values():
            device.database.close()
