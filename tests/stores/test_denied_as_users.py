"""Writes the rules refuse, played by signed-in users on the Firestore emulator under the
rules ``replicator rules`` generates (issue 27, item 6): the allowed rows land, each
refused one is set aside with Firestore's reason, the next sync does not fail, the
export lists it, and nothing is lost when the sync is killed while it isolates."""

from __future__ import annotations

import json
import signal

import peewee

from replicator import Replicator
from replicator.stores.firestore import FirestoreRemote
from replicator.testing import FaultyRemote
from tests.campaign_models import FormSchema
from tests.helpers import run_script, sync_with_app_commit_at
from tests.models import Comment, Note

MODELS = [Note, Comment, FormSchema]


def _device(tmp_path, users, name, models=MODELS, remote=None):
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    remote = remote or users.remote("alice", timeout=60.0)  # the emulator can be slow
    return Replicator(db, models, remote, device_name=name)


def _remote_ids(users, collection):
    admin = FirestoreRemote(users.service_client(), "users/alice")
    return {d.id for d in admin.pull(collection, None, 10_000).docs if not d.deleted}


def _bad_title(db, doc_id):
    """A note whose title is bytes: the generated rules want text (the app wrote it
    past its model, with SQL)."""
    db.execute_sql("INSERT INTO note (id, title, body) VALUES (?, X'00ff', '')", (doc_id,))


def test_a_download_only_collection_written_beside_allowed_rows(tmp_path, as_users):
    # the rules make form_schemas read-only; this device's app pushes it anyway
    users = as_users(MODELS, download_only=["form_schemas"])
    phone = _device(tmp_path, users, "phone")
    with phone.bound():
        note = Note.create(title="visit")
        Comment.create(note=note, text="all well")
        schema = FormSchema.create(form="visit", version=2, schema="{}")
    report = phone.sync()
    assert report.uploaded == {"note": 1, "comment": 1}
    assert [(e.collection, e.id) for e in report.denied] == [("form_schemas", schema.id)]
    assert "security rules refused" in str(report.denied[0].error)
    again = phone.sync()  # does not fail, and does not send the refused row again
    assert again.denied == () and again.uploaded == {}
    out = tmp_path / "denied.jsonl"
    assert phone.export_denied(out) == 1
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["id"] == schema.id and line["row"]["version"] == 2
    laptop = _device(tmp_path, users, "laptop")
    laptop.sync()
    with laptop.bound():
        assert [n.title for n in Note.select()] == ["visit"]
        assert FormSchema.select().count() == 0


def test_one_refused_row_in_the_middle_of_a_batch_of_400(tmp_path, as_users):
    users = as_users([Note, Comment])
    phone = _device(tmp_path, users, "phone", models=[Note, Comment])
    with phone.bound():
        for i in range(400):
            if i == 200:
                _bad_title(phone.database, "n0200")  # uploads go in id order: the middle
            else:
                Note.create(id=f"n{i:04d}", title=f"note {i}")
    store = FaultyRemote(phone.remote)
    phone.remote = store
    report = phone.sync()
    assert [e.id for e in report.denied] == ["n0200"], report.summary()
    assert store.calls.count("push") <= 1 + 2 * 9
    assert _remote_ids(users, "note") == {f"n{i:04d}" for i in range(400) if i != 200}
    assert [r.id for r in phone.denied_rows()] == ["n0200"]


def test_a_child_of_a_refused_parent_waits_and_the_remote_holds_no_orphan(tmp_path, as_users):
    users = as_users(MODELS, download_only=["note"])  # notes are read-only here
    phone = _device(tmp_path, users, "phone")
    with phone.bound():
        note = Note.create(title="not mine to write")
        Comment.create(note=note, text="under it")
        FormSchema.create(form="f", version=1, schema="{}")
    report = phone.sync()
    assert report.uploaded == {"form_schemas": 1}
    assert [e.id for e in report.denied] == [note.id]
    assert [e.collection for e in report.rejected] == ["comment"]
    assert _remote_ids(users, "comment") == set()
    assert phone.sync().uploaded == {}  # still waiting: never an orphan


def test_the_app_fixing_the_row_during_the_sync_loses_nothing(tmp_path, as_users):
    users = as_users([Note, Comment])
    path = tmp_path / "phone.db"
    phone = _device(tmp_path, users, "phone", models=[Note, Comment])
    phone.sync()  # registered: the next sync is all upload
    with phone.bound():
        Note.create(id="ok", title="fine")
        _bad_title(phone.database, "bad")
    fix = [("UPDATE note SET title = 'fixed' WHERE id = 'bad'", ())]
    assert sync_with_app_commit_at(phone, path, 40, fix)
    # the app's fix came after the refusal was recorded: the entry names the refused
    # version, the row holds a newer one, so it is not aside and goes up next time
    assert [r.id for r in phone.denied_rows()] == ["bad"]
    assert phone.pending_count() == 1
    report = phone.sync()
    assert report.uploaded == {"note": 1} and report.denied == ()
    assert phone.denied_rows() == []
    assert _remote_ids(users, "note") == {"ok", "bad"}
    with phone.bound():
        assert Note.get_by_id("bad").title == "fixed"


_KILLED = """
import os, signal, sys
import peewee
from replicator import Replicator
from replicator.testing import FaultyRemote, MockIdTokens
from replicator.stores.firestore_user import UserFirestoreRemote
from tests.models import Comment, Note

path, project, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
remote = FaultyRemote(UserFirestoreRemote(MockIdTokens("alice", project), project, timeout=10.0))
pushes = {"n": 0}
def push(*args):
    pushes["n"] += 1
    if pushes["n"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
remote.hooks["push"] = push
db = peewee.SqliteDatabase(path, pragmas={"foreign_keys": 1})
Replicator(db, [Note, Comment], remote, device_name="phone").sync()
"""


def test_killed_while_isolating_then_restarted_loses_nothing(tmp_path, as_users):
    users = as_users([Note, Comment])
    phone = _device(tmp_path, users, "phone", models=[Note, Comment])
    with phone.bound():
        for i in range(60):
            Note.create(id=f"n{i:03d}", title=f"note {i}")
        _bad_title(phone.database, "n030-bad")
    phone.database.close()
    done = run_script(_KILLED, tmp_path / "phone.db", users.project, 4)
    assert done.returncode == -signal.SIGKILL, done.stderr
    landed = _remote_ids(users, "note")
    assert 0 < len(landed) < 60  # killed part-way through the isolation
    phone = _device(tmp_path, users, "phone", models=[Note, Comment])
    report = phone.sync()
    assert _remote_ids(users, "note") == {f"n{i:03d}" for i in range(60)}
    assert [r.id for r in phone.denied_rows()] == ["n030-bad"]
    assert report.denied or phone.denied_rows()
    with phone.bound():
        assert Note.select().count() == 61
