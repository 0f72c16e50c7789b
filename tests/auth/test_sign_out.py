"""Sign-out forgets the tokens and, when the app names them, removes the user's local
data: each database with its -wal, -shm and -journal files, nothing else."""

from __future__ import annotations

import peewee
import pytest

from replicator import AuthError, ConfigurationError, LocalDatabaseError
from replicator.auth import remove_local_data


def wal_database(path):
    """A real SQLite database in WAL mode, with its -wal and -shm files on disk."""
    db = peewee.SqliteDatabase(str(path), pragmas={"journal_mode": "wal"})
    db.connect()
    db.execute_sql("create table notes (body text)")
    db.execute_sql("insert into notes values ('private')")
    return db


def test_sign_out_forgets_the_tokens(make_auth, tmp_path):
    auth = make_auth("device")
    session = auth.sign_up("ada@example.com", "correct horse")
    session.sign_out()
    assert not session.signed_in and session.expires_at is None
    assert not (tmp_path / "device.session.json").exists()
    assert auth.restore() is None
    with pytest.raises(AuthError, match="signed out") as caught:
        session.id_token()
    assert caught.value.code == "SIGNED_OUT"
    with pytest.raises(AuthError):
        session.refresh_id_token()


def test_sign_out_removes_the_local_data_the_app_names(make_auth, tmp_path):
    session = make_auth().sign_in_anonymously()
    open_db = wal_database(tmp_path / "user.db")
    assert (tmp_path / "user.db-wal").exists() and (tmp_path / "user.db-shm").exists()
    wal_database(tmp_path / "cache.db").close()
    for suffix in ("-wal", "-shm", "-journal"):  # left behind by an app that crashed
        (tmp_path / f"cache.db{suffix}").write_bytes(b"private")
    (tmp_path / "other-app.db").write_bytes(b"keep me")

    removed = session.sign_out(forget_local_data=[open_db, tmp_path / "cache.db"])

    # a peewee database is closed before its files go (closing it folds its WAL back)
    assert open_db.is_closed()
    names = sorted(p.name for p in removed)
    assert names == ["cache.db", "cache.db-journal", "cache.db-shm", "cache.db-wal", "user.db"]
    left = sorted(p.name for p in tmp_path.iterdir() if ".db" in p.name)
    assert left == ["other-app.db"]


def test_sign_out_keeps_local_data_unless_asked(make_auth, tmp_path):
    session = make_auth().sign_in_anonymously()
    wal_database(tmp_path / "user.db").close()
    assert session.sign_out() == []
    assert (tmp_path / "user.db").exists()


def test_a_file_that_cannot_be_removed_is_named_and_the_user_is_still_signed_out(
    make_auth, tmp_path
):
    auth = make_auth("device")
    session = auth.sign_in_anonymously()
    wal_database(tmp_path / "user.db").close()
    (tmp_path / "user.db-journal").mkdir()  # something in the way that unlink refuses
    with pytest.raises(LocalDatabaseError, match=r"user\.db-journal") as caught:
        session.sign_out(forget_local_data=[tmp_path / "user.db"])
    assert not caught.value.retryable and "remove_local_data again" in caught.value.hint
    assert not session.signed_in and auth.restore() is None
    assert not (tmp_path / "user.db").exists()  # every other file went
    (tmp_path / "user.db-journal").rmdir()
    assert remove_local_data([tmp_path / "user.db"]) == []  # again: nothing left to do


def test_what_is_not_a_database_is_refused_before_anything_is_removed(make_auth, tmp_path):
    session = make_auth().sign_in_anonymously()
    wal_database(tmp_path / "user.db").close()
    with pytest.raises(ConfigurationError, match="paths and peewee databases"):
        session.sign_out(forget_local_data=[tmp_path / "user.db", 42])
    assert (tmp_path / "user.db").exists()


def test_an_in_memory_database_has_no_files_to_remove(make_auth):
    session = make_auth().sign_in_anonymously()
    db = peewee.SqliteDatabase(":memory:")
    db.connect()
    assert session.sign_out(forget_local_data=[db]) == []
    assert db.is_closed()


def test_a_refresh_never_signs_a_signed_out_user_back_in(make_auth, clock):
    auth = make_auth("device")
    session = auth.sign_up("ada@example.com", "correct horse")
    auth.restore().sign_out()  # another copy of the same session signs out
    clock.advance(3600)
    assert session.id_token() and session.refreshes == 1  # this copy still works...
    assert auth.restore() is None  # ...but the next start of the app finds no session


def test_a_refresh_of_the_previous_user_never_overwrites_the_next_one(make_auth, clock):
    auth = make_auth("device")
    ada = auth.sign_up("ada@example.com", "correct horse")
    bob = auth.sign_up("bob@example.com", "battery staple")  # the app forgot to sign ada out
    clock.advance(3600)
    ada.id_token()
    restored = auth.restore()
    assert restored is not None and restored.uid == bob.uid
