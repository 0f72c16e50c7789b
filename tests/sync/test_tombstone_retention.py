"""Tombstone retention: deletes are forgotten after a while, and a device offline for
longer than that recovers without losing its own work (retention.py).

Every test runs on the embedded store and on the Firestore emulator, with a
retention of about a second (or a purge of everything, ``before`` in the future).
"""

from __future__ import annotations

import datetime as _dt
import time

import pytest

from replicator import OfflineError
from replicator.sync.retention import purge
from replicator.testing import FaultyRemote
from tests.helpers import assert_converged
from tests.models import Comment, Note

FUTURE = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=1)
SHORT = _dt.timedelta(seconds=1)


def _tombstones(remote, collection: str) -> set[str]:
    return {i for i, d in remote.all_docs(collection).items() if d.deleted}


def _local_tombstones(device, pending: int) -> int:
    (n,) = device.database.execute_sql(
        "SELECT COUNT(*) FROM replicator_tombstones WHERE pending = ?", (pending,)
    ).fetchone()
    return n


def _note(device, note_id: str):
    with device.bound():
        return Note.get_or_none(Note.id == note_id)


def _history(make_device, **kw):
    """Device a writes notes with comments; c takes them, then goes offline and edits
    while a deletes; every tombstone is then purged from the store."""
    a, c = make_device("a"), make_device("c", **kw)
    with a.bound():
        notes = [Note.create(title=f"n{i}") for i in range(6)]
        for note in notes:
            Comment.create(note=note, text=f"on {note.title}")
    a.sync()
    c.sync()
    with c.bound():  # offline on c
        Note.update(body="edited on c").where(Note.id.in_([notes[1].id, notes[2].id])).execute()
        fresh = Note.create(title="new on c")
    with a.bound():
        notes[1].delete_instance(recursive=True)  # c edited it meanwhile
        notes[3].delete_instance(recursive=True)
        Comment.delete().where(Comment.note == notes[4].id).execute()
        Note.update(title="n5 renamed").where(Note.id == notes[5].id).execute()
    a.sync()
    return a, c, notes, fresh


def test_a_device_offline_past_the_retention_recovers_without_losing_its_edits(make_device, remote):
    a, c, notes, fresh = _history(make_device)
    assert _tombstones(remote, "note") == {notes[1].id, notes[3].id}
    purged = purge(remote, ["note", "comment"], FUTURE)
    assert purged == {"note": 2, "comment": 3}
    assert _tombstones(remote, "note") == set() and _tombstones(remote, "comment") == set()
    assert set(remote.horizons()) == {"note", "comment"}

    report = c.sync()

    assert set(report.recovered) == {"note", "comment"}
    assert "tombstone retention" in report.summary()
    assert _note(c, notes[3].id) is None  # deleted remotely, its tombstone long gone
    with c.bound():
        assert Comment.select().where(Comment.note == notes[4].id).count() == 0
    assert _note(c, notes[5].id).title == "n5 renamed"
    # edited here after the remote delete: kept, reported, and created again remotely
    kept = _note(c, notes[1].id)
    assert kept is not None and kept.body == "edited on c"
    restored = [r for r in report.conflicts if r.outcome == "restored"]
    assert [r.id for r in restored] == [notes[1].id]
    assert _note(c, notes[2].id).body == "edited on c"
    assert remote.all_docs("note")[notes[1].id].deleted is False
    assert remote.all_docs("note")[fresh.id].data["title"] == "new on c"

    assert not c.sync().recovered  # recovered once, then an ordinary device again
    assert_converged([a, c])
    assert _note(a, notes[1].id).body == "edited on c"
    assert _note(a, notes[3].id) is None


def test_a_device_that_saw_the_deletes_is_not_disturbed_by_a_purge(make_device, remote):
    a, c, _notes, _ = _history(make_device)
    b = make_device("b")
    b.sync()  # b is up to date: it holds every delete
    purge(remote, ["note", "comment"], FUTURE)
    with a.bound():
        Note.create(title="after the purge")
    a.sync()
    report = b.sync()
    assert report.recovered == ()
    assert report.downloaded == {"note": 1}
    assert_converged([a, b, c])


def test_a_recovery_cut_short_resumes_where_it_stopped(make_device, remote):
    faulty = FaultyRemote(remote)
    a, c, notes, _ = _history(make_device, store=faulty, page_size=2)
    purge(remote, ["note", "comment"], FUTURE)
    pulls = []

    def cut(*_args, **_kw):
        pulls.append(1)
        if len(pulls) == 3:  # in the middle of the notes' second download
            raise OfflineError("injected: the network went away")

    faulty.hooks["pull"] = cut
    with pytest.raises(OfflineError):
        c.sync()
    assert c.local.recovery("note") is not None
    faulty.hooks.clear()
    report = c.sync()
    assert "note" in report.recovered
    assert _note(c, notes[3].id) is None
    assert _note(c, notes[1].id).body == "edited on c"
    assert c.local.recovery("note") is None and c.local.recovery("comment") is None
    (seen,) = c.database.execute_sql("SELECT COUNT(*) FROM replicator_seen").fetchone()
    assert seen == 0
    assert_converged([a, c])


def test_a_sync_purges_old_tombstones_and_prunes_acknowledged_deletes(make_device, remote):
    a = make_device("a", tombstone_retention=SHORT)
    late = make_device("late")
    with a.bound():
        notes = [Note.create(title=f"n{i}") for i in range(4)]
    a.sync()
    late.sync()
    with a.bound():
        for note in notes[:3]:
            note.delete_instance()
    assert a.sync().purged == {}  # younger than the retention: kept
    assert _tombstones(remote, "note") == {n.id for n in notes[:3]}
    assert _local_tombstones(a, pending=0) == 3
    time.sleep(1.2)
    with a.bound():
        notes[3].delete_instance()  # a pending delete is never pruned
    a.local.prune_acked_tombstones("9999-12-31")
    assert _local_tombstones(a, pending=1) == 1
    report = a.sync()
    assert report.purged == {"note": 3}
    assert _tombstones(remote, "note") == {notes[3].id}
    assert _local_tombstones(a, pending=0) == 1  # only the one just acknowledged
    assert a.sync().purged == {}  # at most once per interval
    # a device that never downloaded those deletes finds out and catches up
    report = late.sync()
    assert report.recovered == ("note",)
    with late.bound():
        assert Note.select().count() == 0


def test_a_device_purges_only_the_collections_it_writes(make_device, remote):
    """Reference data is the service's: a device that only downloads it leaves its old
    tombstones alone (the security rules give devices no delete there)."""
    from tests.campaign_models import FormSchema

    models = [Note, FormSchema]
    publisher = make_device("publisher", models=models)
    reader = make_device(
        "reader", models=models, download_only=[FormSchema], tombstone_retention=SHORT
    )
    with publisher.bound():
        forms = [FormSchema.create(form=f"f{i}", version=1, schema="{}") for i in range(2)]
        notes = [Note.create(title=f"n{i}") for i in range(2)]
    publisher.sync()
    with publisher.bound():
        for row in (*forms, *notes):
            row.delete_instance()
    publisher.sync()
    time.sleep(1.2)
    report = reader.sync()
    assert report.purge_error is None and report.purged == {"note": 2}
    assert _tombstones(remote, "form_schemas") == {f.id for f in forms}


def test_retention_is_validated(make_device):
    from replicator import ConfigurationError

    for bad in (_dt.timedelta(0), 90, "90 days"):
        with pytest.raises(ConfigurationError, match="tombstone_retention"):
            make_device("x", tombstone_retention=bad)


def test_an_embedded_remote_from_before_retention_is_upgraded(tmp_path):
    """Its tombstones count from the upgrade: none is purged before the retention passes."""
    import sqlite3

    from replicator import EmbeddedRemote

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE docs (collection TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL,
               deleted INTEGER NOT NULL DEFAULT 0, updated_by TEXT,
               seq INTEGER NOT NULL UNIQUE, PRIMARY KEY (collection, id));
           INSERT INTO docs VALUES ('note', 'gone', '{}', 1, 'x', 1);
           INSERT INTO docs VALUES ('note', 'kept', '{}', 0, 'x', 2);"""
    )
    conn.commit()
    conn.close()
    remote = EmbeddedRemote(path)
    a_day_ago = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=1)
    assert purge(remote, ["note"], a_day_ago) == {}
    assert purge(remote, ["note"], FUTURE) == {"note": 1}
    assert set(remote.all_docs("note")) == {"kept"}
    assert remote.horizons() == {"note": "00000000000000000001"}


@pytest.mark.parametrize("remote", ["embedded", "firestore"], indirect=True)
def test_replicator_compact_purges_for_an_operator(make_device, remote, tmp_path):
    from click.testing import CliRunner

    from replicator.cli import main

    a, c, _notes, _ = _history(make_device)
    if hasattr(remote, "path"):
        where = ["--embedded", str(remote.path)]
    else:
        where = ["--firestore-root", remote.root, "--firestore-project", remote.client.project]
    runner = CliRunner()
    young = runner.invoke(main, ["compact", *where, "--older-than-days", "1"])
    assert young.exit_code == 0, young.output
    assert "note: 0 tombstone(s) purged" in young.output
    time.sleep(0.2)
    now = runner.invoke(main, ["compact", *where, "--older-than-days", "0.000001"])
    assert now.exit_code == 0, now.output
    assert "note: 2 tombstone(s) purged" in now.output
    assert "comment: 3 tombstone(s) purged" in now.output
    assert _tombstones(remote, "note") == set()
    assert set(c.sync().recovered) == {"note", "comment"}
    assert_converged([a, c])
    neither = runner.invoke(main, ["compact"])
    assert neither.exit_code != 0 and "exactly one remote" in neither.output


def test_a_failed_purge_is_reported_and_tried_again(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty, tombstone_retention=SHORT)
    with a.bound():
        note = Note.create(title="x")
    a.sync()
    with a.bound():
        note.delete_instance()
    a.sync()
    time.sleep(1.2)
    faulty.fail("purge_tombstones")
    report = a.sync()
    assert isinstance(report.purge_error, OfflineError) and report.purged == {}
    assert "not purged" in report.summary()
    assert a.sync().purged == {"note": 1}  # the next sync tries again


def test_tombstones_purged_while_a_device_downloads_are_reconciled(make_device, remote):
    """Another device purges a tombstone between this device's read of the horizons and
    its read of the page that held it: the page comes without it, and the cursor moves
    past it on later documents. The download sees the horizon moved past where it
    started, and the next sync reconciles (without that, the row lived on for ever)."""
    a = make_device("a")
    faulty = FaultyRemote(remote)
    b = make_device("b", store=faulty)
    with a.bound():
        gone = Note.create(title="deleted by a")
    a.sync()
    b.sync()
    with a.bound():
        Note.delete_by_id(gone.id)
        Note.create(title="written after the delete")  # the cursor moves past the tombstone
    a.sync()

    def purge_first() -> None:
        faulty.hooks.pop("pull")
        purge(remote, ["note", "comment"], FUTURE)

    faulty.hooks["pull"] = lambda *args, **kw: purge_first()
    first = b.sync()
    assert first.downloaded == {"note": 1}  # the new note only: the tombstone was gone
    assert _note(b, gone.id) is not None
    second = b.sync()
    assert second.recovered == ("note",)
    assert _note(b, gone.id) is None
    assert_converged([a, b])


class _DamagingTombstones:
    """The remote, except that the tombstones of ``note`` the next pulls return come
    damaged (the engine sets each aside instead of applying it)."""

    def __init__(self, inner):
        self.inner = inner
        self.damage = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def pull(self, collection, *args, **kw):
        import attrs

        page = self.inner.pull(collection, *args, **kw)
        if not self.damage or collection != "note":
            return page
        docs = [
            attrs.evolve(d, problem="damaged on the way") if d.deleted else d for d in page.docs
        ]
        return attrs.evolve(page, docs=docs)


def test_a_delete_set_aside_then_purged_still_deletes_the_row(make_device, remote):
    """A tombstone this device set aside (it could not be applied) and the remote purged
    since: the retry finds the document gone, which means deleted; the row goes (it
    lived on for ever, the set-aside entry simply dropped)."""
    a = make_device("a")
    damaging = _DamagingTombstones(remote)
    b = make_device("b", store=damaging)
    with a.bound():
        gone = Note.create(title="deleted by a")
        Note.create(title="stays")
    a.sync()
    b.sync()
    with a.bound():
        Note.delete_by_id(gone.id)
    a.sync()
    report = b.sync()
    assert [e.id for e in report.set_aside] == [gone.id]
    assert _note(b, gone.id) is not None
    purge(remote, ["note", "comment"], FUTURE)
    damaging.damage = False
    b.sync()
    assert _note(b, gone.id) is None
    assert_converged([a, b])


def test_a_device_that_uploaded_before_it_ever_downloaded_learns_of_purged_deletes(
    make_device, remote
):
    """A device's first sync finds nothing to download (no cursor) and uploads its rows;
    another device deletes one, and the tombstone is purged. With no cursor, the device
    was not "behind the horizon", downloaded from the start, never met the delete, and
    kept the row for ever; now it reconciles."""
    b = make_device("b")
    with b.bound():
        gone = Note.create(title="b's, deleted by a")
        Note.create(title="b's, kept")
    b.sync()
    a = make_device("a")
    a.sync()
    with a.bound():
        Note.delete_by_id(gone.id)
    a.sync()
    purge(remote, ["note", "comment"], FUTURE)
    report = b.sync()
    assert "note" in report.recovered
    assert _note(b, gone.id) is None
    assert_converged([a, b])
