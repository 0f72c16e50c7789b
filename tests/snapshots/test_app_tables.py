"""A restore replaces only what replicator owns; the app's own tables never travel.

Blob stores: a directory, S3 (moto in server mode) and SeaweedFS.
"""

from __future__ import annotations

import sqlite3

import peewee
import pytest

from replicator import EmbeddedRemote, SnapshotKey
from replicator.snapshots.fetch import fetch_and_decrypt
from replicator.snapshots.manifest import read_manifest
from tests.helpers import snapshot_rows
from tests.models import Comment, Note
from tests.sync.test_schema_drift import NoteV1, NoteV2

KEY = SnapshotKey(bytes(range(1, 33)))


@pytest.fixture
def remote(tmp_path):
    return EmbeddedRemote(tmp_path / "remote.db")


class Setting(peewee.Model):  # a table the app keeps for itself
    key = peewee.TextField(primary_key=True)
    value = peewee.TextField()

    class Meta:
        table_name = "app_settings"


def test_login_keeps_the_apps_own_tables(make_device, blobs, tmp_path):
    a = make_device("a", blobs=blobs, key=KEY)
    with a.bound():
        Comment.create(note=Note.create(title="synced"), text="c")
    a.sync()
    c = make_device("c", blobs=blobs, key=KEY)
    with c.database.bind_ctx([Setting]):
        c.database.create_tables([Setting])
        Setting.create(key="theme", value="dark")
    c.database.execute_sql("CREATE TABLE cache (blob BLOB)")
    c.database.execute_sql("INSERT INTO cache VALUES (x'00ff')")
    c.database.execute_sql("CREATE VIEW note_titles AS SELECT title FROM note")
    report = c.login()
    assert report.restored is not None
    with c.database.bind_ctx([Setting]):
        assert Setting.get_by_id("theme").value == "dark"
    assert c.database.execute_sql("SELECT blob FROM cache").fetchall() == [(b"\x00\xff",)]
    assert c.database.execute_sql("SELECT title FROM note_titles").fetchall() == [("synced",)]
    assert snapshot_rows(c) == snapshot_rows(a)
    with c.bound():  # change capture works on the restored rows
        Note.update(title="edited").execute()
    assert c.dirty_counts()["note"] == 1


def test_a_snapshot_never_carries_the_apps_own_tables(make_device, blobs, tmp_path):
    a = make_device("a", blobs=blobs, key=KEY)
    with a.database.bind_ctx([Setting]):
        a.database.create_tables([Setting])
        Setting.create(key="token", value="local-only-secret-7311")
    with a.bound():
        Note.create(title="synced")
    a.sync()
    plain = tmp_path / "plain.db"
    fetch_and_decrypt(blobs, read_manifest(blobs), KEY, plain)
    assert b"local-only-secret-7311" not in plain.read_bytes()
    conn = sqlite3.connect(plain)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "app_settings" not in tables and {"note", "comment", "DownloadedTracker"} <= tables


def test_a_newer_app_restores_an_older_apps_snapshot_and_adopts_unseen_values(make_device, blobs):
    v2 = make_device("v2", models=[NoteV2], blobs=blobs, key=KEY)
    with v2.bound():
        red = NoteV2.create(title="from v2", color="red")
    v2.sync()
    v1 = make_device("v1", models=[NoteV1], blobs=blobs, key=KEY)
    with v1.bound():
        plain = NoteV1.create(title="from v1")
    v1.sync()  # v1 is now the freshest: it publishes, without a color column
    assert read_manifest(blobs).device_name == "v1"
    published = read_manifest(blobs).snapshot_id
    fresh = make_device("fresh", models=[NoteV2], blobs=blobs, key=KEY)
    assert fresh.login().restored == published
    with fresh.bound():
        assert NoteV2.get_by_id(red.id).color == "red"  # from the row's base in the snapshot
        assert NoteV2.get_by_id(plain.id).color == "yellow"  # never had one
    assert sum(fresh.dirty_counts().values()) == 0


def test_a_restore_that_fails_leaves_every_table_as_it_was(make_device, blobs, tmp_path):
    a = make_device("a", blobs=blobs, key=KEY)
    with a.bound():
        Note.create(title="synced")
    a.sync()
    c = make_device("c", blobs=blobs, key=SnapshotKey(bytes(32)))  # the wrong key
    with c.database.bind_ctx([Setting]):
        c.database.create_tables([Setting])
        Setting.create(key="theme", value="dark")
    c.database.close()
    before = (tmp_path / "c.db").read_bytes()
    c.database.connect()
    with pytest.raises(Exception) as info:
        c.login()
    assert type(info.value).__name__ == "WrongKeyError"
    c.database.close()
    assert (tmp_path / "c.db").read_bytes() == before


def test_an_empty_device_keeps_its_app_schema_and_its_open_connections(
    make_device, blobs, tmp_path
):
    a = make_device("a", blobs=blobs, key=KEY)
    with a.bound():
        Note.create(title="synced")
    a.sync()
    c = make_device("c", blobs=blobs, key=KEY)
    with c.database.bind_ctx([Setting]):
        c.database.create_tables([Setting])  # the app's table, still empty
    other = sqlite3.connect(tmp_path / "c.db")  # a connection the app already holds
    assert other.execute("SELECT COUNT(*) FROM note").fetchone() == (0,)
    assert c.login().restored is not None
    assert other.execute("SELECT title FROM note").fetchall() == [("synced",)]
    other.execute("INSERT INTO app_settings (key, value) VALUES ('k', 'v')")
    other.commit()
    other.close()
    with c.database.bind_ctx([Setting]):
        assert Setting.get_by_id("k").value == "v"
    with c.bound():
        Note.create(title="after")
    assert c.dirty_counts()["note"] == 1
