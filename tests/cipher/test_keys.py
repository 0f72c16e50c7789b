"""Keys of an encrypted database: where they come from, a wrong one, a new one, and a
plain database made by this release encrypted in place."""

from __future__ import annotations

import os

import peewee
import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from playhouse.sqlcipher_ext import SqlCipherDatabase

from replicator import EmbeddedRemote, Replicator
from replicator.cipher import EncryptedDatabase, KeyringKey, encrypt_in_place, rekey
from replicator.errors import (
    ConfigurationError,
    LocalDatabaseError,
    WrongDatabaseKeyError,
)
from tests.cipher.scan import markers_found
from tests.models import MODELS, Comment, Note

KEY = bytes(range(32))
MARK = "Maria-da-Conceicao-household-7731"


def device(path, key, remote, name="a"):
    db = EncryptedDatabase(str(path), key=key, pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, remote, device_name=name)


def write(rep, title=MARK):
    with rep.bound():
        Comment.create(note=Note.create(title=title), text=f"{title} comment")


@pytest.fixture
def remote(tmp_path):
    """The server's side, in a folder of its own: what the scans look at is the device's."""
    (tmp_path / "server").mkdir()
    return EmbeddedRemote(tmp_path / "server" / "remote.db")


def test_a_wrong_key_is_a_typed_error_naming_the_file(tmp_path, remote):
    path = tmp_path / "field.db"
    a = device(path, KEY, remote)
    write(a)
    a.database.close()
    for wrong in (bytes(32), "a passphrase", KEY.hex()):  # the hex text is a passphrase
        with pytest.raises(WrongDatabaseKeyError) as caught:
            device(path, wrong, remote)
        assert str(path) in str(caught.value)
        assert caught.value.path == str(path)
        assert not caught.value.retryable
    # peewee's own SqlCipherDatabase, under a Replicator: the same typed error
    with pytest.raises(WrongDatabaseKeyError, match=str(path)):
        Replicator(SqlCipherDatabase(str(path), passphrase="wrong"), MODELS, remote)
    # a plain SQLite file opened with a key, and a file that is no database
    plain = tmp_path / "plain.db"
    peewee.SqliteDatabase(str(plain)).execute_sql("CREATE TABLE t (x)")
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(8192))
    for other in (plain, junk):
        with pytest.raises(WrongDatabaseKeyError, match=str(other)):
            device(other, KEY, remote)
    assert device(path, KEY, remote).pending_count() == 2  # the right key still opens it


def test_a_key_that_is_no_key_is_a_configuration_error(tmp_path, remote):
    for bad in (b"short", "", 42):
        with pytest.raises(ConfigurationError):
            device(tmp_path / "x.db", bad, remote)


def test_the_key_comes_from_a_callback_asked_on_each_connection(tmp_path, remote):
    asked = []

    def key():
        asked.append(1)
        return KEY

    a = device(tmp_path / "a.db", key, remote)
    write(a)
    assert asked
    a.database.close()
    before = len(asked)
    b = device(tmp_path / "a.db", key, remote)
    assert b.pending_count() == 2
    assert len(asked) > before
    with pytest.raises(WrongDatabaseKeyError):
        device(tmp_path / "a.db", lambda: bytes(32), remote)


@pytest.fixture
def keyring_backend():
    keyring = pytest.importorskip("keyring", reason="the keyring extra is not installed")
    from keyring.backend import KeyringBackend

    class InMemory(KeyringBackend):
        """A real keyring backend that keeps its secrets in this process."""

        priority = 1  # type: ignore[assignment]

        def __init__(self):
            super().__init__()
            self.secrets = {}

        def get_password(self, service, username):
            return self.secrets.get((service, username))

        def set_password(self, service, username, password):
            self.secrets[(service, username)] = password

        def delete_password(self, service, username):
            self.secrets.pop((service, username))

    previous = keyring.get_keyring()
    backend = InMemory()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_the_os_keyring_keeps_a_raw_key(tmp_path, remote, keyring_backend):
    with pytest.raises(ConfigurationError, match="holds no database key"):
        device(tmp_path / "a.db", KeyringKey("field-app", "db"), remote)
    a = device(tmp_path / "a.db", KeyringKey("field-app", "db", create=True), remote)
    write(a)
    stored = keyring_backend.secrets[("field-app", "db")]
    assert len(bytes.fromhex(stored)) == 32
    a.database.close()
    assert device(tmp_path / "a.db", KeyringKey("field-app", "db"), remote).pending_count() == 2
    assert device(tmp_path / "a.db", bytes.fromhex(stored), remote).pending_count() == 2


def test_rekey_the_old_key_no_longer_opens_the_new_one_does(tmp_path, remote):
    path = tmp_path / "a.db"
    a = device(path, KEY, remote)
    write(a)
    a.sync()
    write(a, "after the sync")
    rekey(a.database, "a new passphrase")
    write(a, "after the rekey")  # the open connection carries on
    a.database.close()
    with pytest.raises(WrongDatabaseKeyError):
        device(path, KEY, remote)
    b = device(path, "a new passphrase", remote)
    assert b.pending_count() == 4
    assert b.sync().uploaded == {"note": 2, "comment": 2}
    assert not markers_found(tmp_path, [MARK], only=[path])
    # peewee's own SqlCipherDatabase: rekey to a raw key, then open with it
    db = SqlCipherDatabase(str(path), passphrase="a new passphrase")
    rekey(db, KEY)
    db.close()
    assert device(path, KEY, remote).pending_count() == 0
    with pytest.raises(ConfigurationError):
        rekey(peewee.SqliteDatabase(str(tmp_path / "plain.db")), KEY)


def test_a_plain_database_of_this_release_is_encrypted_in_place(tmp_path, remote):
    path = tmp_path / "a.db"
    plain = Replicator(
        peewee.SqliteDatabase(str(path), pragmas={"foreign_keys": 1, "journal_mode": "wal"}),
        MODELS,
        remote,
        device_name="a",
    )
    write(plain)
    plain.sync()
    write(plain, "not synced yet")
    identity = plain.installation_id
    plain.database.execute_sql("PRAGMA user_version = 7")
    plain.database.close()
    assert markers_found(tmp_path, [MARK], only=[path])  # the test can fail

    encrypt_in_place(path, KEY)

    assert not markers_found(tmp_path, [MARK, "not synced yet"], only=list(tmp_path.glob("a.db*")))
    with pytest.raises(LocalDatabaseError):  # no longer opens as plain SQLite
        Replicator(peewee.SqliteDatabase(str(path)), MODELS, remote)
    a = device(path, KEY, remote)
    assert a.installation_id == identity
    assert a.database.execute_sql("PRAGMA user_version").fetchone() == (7,)
    assert a.pending_count() == 2
    assert a.sync().uploaded == {"note": 1, "comment": 1}
    with a.bound():
        assert Note.select().count() == 2
    a.database.close()
    # a second time: the file is encrypted already, and stays as it was
    before = path.read_bytes()
    with pytest.raises(WrongDatabaseKeyError):
        encrypt_in_place(path, KEY)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".a.db")] == []
    assert markers_found(tmp_path / "server", [MARK]) != []  # the remote holds them
