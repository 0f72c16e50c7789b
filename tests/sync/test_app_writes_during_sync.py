"""An app that writes while a sync runs never makes the remote hold a child without its parent.

The app's transaction (a note and a comment on it, committed together) is
injected between two statements of the sync's own connection, through
sqlite3's trace callback, at every statement position of one sync in turn.
The database runs in WAL mode, as apps that write from several threads do, so
the app's commit really lands between the engine's statements.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator
from tests.helpers import sync_with_app_commit_at
from tests.models import Comment, Note

sqlite3.enable_callback_tracebacks(True)


def _device(path: Path, remote: Any, name: str) -> Replicator:
    db = peewee.SqliteDatabase(str(path), pragmas={"foreign_keys": 1, "journal_mode": "wal"})
    return Replicator(db, [Note, Comment], remote, device_name=name)


def _remote_orphans(remote: Any) -> list[str]:
    notes = {i for i, d in remote.all_docs("note").items() if not d.deleted}
    return [
        i
        for i, d in remote.all_docs("comment").items()
        if not d.deleted and d.data.get("note_id") not in notes
    ]


def _sync_with_app_write_at(tmp_path: Path, position: int) -> tuple[bool, Replicator, Any]:
    """Sync device a while the app commits a note and a comment before statement ``position``."""
    remote = EmbeddedRemote(tmp_path / "remote.db")
    a = _device(tmp_path / "a.db", remote, "a")
    with a.bound():
        note = Note.create(title="existing")
        Comment.create(note=note, text="existing comment")
    note_id, comment_id = str(uuid.uuid4()), str(uuid.uuid4())
    done = sync_with_app_commit_at(
        a,
        tmp_path / "a.db",
        position,
        [
            ("INSERT INTO note (id, title, body) VALUES (?, 'app note', '')", (note_id,)),
            (
                "INSERT INTO comment (id, note_id, text) VALUES (?, ?, 'app comment')",
                (comment_id, note_id),
            ),
        ],
    )
    return done, a, remote


def _statements_in_one_sync(tmp_path: Path) -> int:
    remote = EmbeddedRemote(tmp_path / "count-remote.db")
    a = _device(tmp_path / "count.db", remote, "a")
    with a.bound():
        Comment.create(note=Note.create(title="x"), text="y")
    count = {"n": 0}
    a.database.connection().set_trace_callback(lambda _sql: count.__setitem__("n", count["n"] + 1))
    a.sync()
    a.database.close()
    return count["n"]


def test_app_transaction_between_any_two_upload_statements_never_orphans_a_child(tmp_path):
    total = _statements_in_one_sync(tmp_path)
    assert total > 5
    landed = 0
    for position in range(1, total + 1):
        run = tmp_path / f"p{position}"
        run.mkdir()
        done, a, remote = _sync_with_app_write_at(run, position)
        landed += done
        assert _remote_orphans(remote) == [], f"orphan on the remote after a write at {position}"
        a.sync()  # the app's rows go up now, parents with children
        assert _remote_orphans(remote) == []
        b = _device(run / "b.db", remote, "b")
        b.sync()
        with a.bound():
            expected = sorted(n.title for n in Note.select())
        with b.bound():
            assert sorted(n.title for n in Note.select()) == expected
            assert Comment.select().count() == len(expected)
        a.database.close()
        b.database.close()
    assert landed >= total // 2, "the injection never found a moment to write"


@pytest.mark.parametrize("remote", ["embedded"], indirect=True)
def test_a_child_whose_parent_never_arrives_is_set_aside_and_the_upload_still_runs(
    make_device, remote
):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        Comment.create(note=Note.create(title="kept"), text="fine")
    a.sync()
    # a hostile or buggy writer leaves a comment pointing at a note that does not exist
    bad = str(uuid.uuid4())
    remote.push(
        [
            _write(
                "comment",
                bad,
                {"note_id": str(uuid.uuid4()), "text": "orphan", "updatedBy": "someone"},
            )
        ],
        _device_record("someone"),
    )
    with b.bound():
        mine = Note.create(title="b's own note")
    report = b.sync()
    assert [(e.collection, e.id) for e in report.set_aside] == [("comment", bad)]
    assert "does not exist" in str(report.set_aside[0].error)
    assert remote.all_docs("note")[mine.id].data["title"] == "b's own note"  # upload ran
    with b.bound():
        assert Note.select().count() == 2 and Comment.select().count() == 1
    # once the parent exists remotely, the next sync applies the child it set aside
    note_id = remote.all_docs("comment")[bad].data["note_id"]
    remote.push(
        [_write("note", note_id, {"title": "late", "updatedBy": "someone"})],
        _device_record("someone"),
    )
    report = b.sync()
    assert report.set_aside == ()
    with b.bound():
        assert Comment.get_by_id(bad).note_id == note_id
    assert b.local.parked() == {}


def _write(collection: str, doc_id: str, data: dict[str, Any]) -> Any:
    from replicator import Write

    return Write(collection, doc_id, data)


def _device_record(iid: str) -> Any:
    from replicator import DeviceRecord

    return DeviceRecord(installation_id=iid)


def test_a_database_locked_by_another_writer_is_a_retryable_error(tmp_path, remote):
    """No raw sqlite error escapes sync(): a lock held past the timeout is retryable."""
    from replicator import LocalDatabaseError
    from tests.models import MODELS, Note

    db = peewee.SqliteDatabase(str(tmp_path / "locked.db"), timeout=0.2)
    device = Replicator(db, MODELS, remote, device_name="locked")
    with device.bound():
        Note.create(title="waits")
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LocalDatabaseError) as info:
            device.sync()
        assert info.value.retryable and "locked" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert device.sync().uploaded == {"note": 1}  # nothing was lost


def test_an_app_writing_from_its_progress_callback_never_waits_for_the_upload(tmp_path):
    """The upload keeps a transaction open across batches (one commit a batch); progress
    is told only after it commits, so an app that writes from another connection when
    told (a UI thread saving what it shows) is never blocked by the sync it watches."""
    remote = EmbeddedRemote(tmp_path / "remote.db")
    path = tmp_path / "a.db"
    told: list[str] = []

    def write_from_elsewhere(progress: Any) -> None:
        if progress.phase != "upload":
            return
        other = sqlite3.connect(path, timeout=0.5, isolation_level=None)
        try:
            other.execute("INSERT INTO note (id, title, body) VALUES (?, 'told', '')",
                          (str(uuid.uuid4()),))  # fmt: skip
            told.append("written")
        except sqlite3.OperationalError as exc:
            told.append(str(exc))
        finally:
            other.close()

    a = _device(path, remote, "a")
    with a.bound(), a.database.atomic():
        for i in range(1_200):  # three batches
            Note.create(title=f"n{i}")
    a.on_progress = write_from_elsewhere
    a.sync()
    assert told and set(told) == {"written"}, told
    a.on_progress = None
    a.sync()
    assert a.dirty_counts()["note"] == 0
    assert len(remote.all_docs("note")) == 1_200 + len(told)
