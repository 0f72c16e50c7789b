"""The foreign keys' on_delete rules hold on the deleting device too, whether or not the
app opened its database with ``PRAGMA foreign_keys``: without it, SQLite ignores them,
the child stayed on the device and went on living remotely, an orphan, until some other
device happened to sync."""

from __future__ import annotations

import threading

import peewee

from replicator import EmbeddedRemote, Replicator, SyncModel
from tests.models import MODELS, Comment, Note


def test_a_deleted_parent_takes_its_children_at_once_without_the_apps_pragma(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))  # no pragmas given
    phone = Replicator(db, MODELS, remote)
    with phone.bound():
        note = Note.create(title="p")
        Comment.create(note=note, text="c")
    phone.sync()
    with phone.bound():
        note.delete_instance()
        assert Comment.select().count() == 0  # cascaded here, now
    phone.sync()
    live = [d for d in remote.all_docs("comment").values() if not d.deleted]
    assert live == []  # no orphan left on the remote by the only device


def test_connections_of_other_threads_enforce_them_too(tmp_path):
    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    Replicator(db, MODELS, EmbeddedRemote(tmp_path / "remote.db"))
    seen: list[int] = []
    worker = threading.Thread(
        target=lambda: seen.append(db.execute_sql("PRAGMA foreign_keys").fetchone()[0])
    )
    worker.start()
    worker.join()
    assert seen == [1]


def test_a_database_whose_synced_models_have_no_foreign_key_is_left_as_the_app_set_it(
    tmp_path,
):
    class Memo(SyncModel):
        text = peewee.TextField()

    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    Replicator(db, [Memo], EmbeddedRemote(tmp_path / "remote.db"))
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 0
