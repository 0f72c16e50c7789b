"""The command line on encrypted databases: the key from a key file or an environment
variable, never an argument; a wrong or missing key is one line naming the file."""

from __future__ import annotations

import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from click.testing import CliRunner

from replicator import DirectoryBlobStore, EmbeddedRemote, Replicator, SnapshotKey
from replicator.cipher import EncryptedDatabase
from replicator.cli import main
from tests.cipher.scan import markers_found
from tests.models import MODELS, Note

SNAPSHOT_KEY = bytes(range(32))
MARK = "Ines-Langa-registo"


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.delenv("REPLICATOR_DATABASE_KEY_FILE", raising=False)
    monkeypatch.delenv("REPLICATOR_DATABASE_PASSPHRASE", raising=False)
    (tmp_path / "key.hex").write_text(SNAPSHOT_KEY.hex())
    (tmp_path / "blobs").mkdir()
    assert CliRunner().invoke(main, ["key", "generate", str(tmp_path / "db.key")]).exit_code == 0
    return tmp_path


def run(*args: str, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_sync_status_and_restore_of_encrypted_databases(place):
    db_key = bytes.fromhex((place / "db.key").read_text())
    writer = Replicator(
        EncryptedDatabase(str(place / "writer.db"), key=db_key),
        MODELS,
        EmbeddedRemote(place / "remote.db"),
        DirectoryBlobStore(place / "blobs"),
        SnapshotKey(SNAPSHOT_KEY),
        device_name="writer",
    )
    with writer.bound():
        Note.create(title=MARK)
    published = writer.sync().snapshot
    writer.database.close()
    # a config file names the key file
    (place / "laptop.toml").write_text(
        'database = "writer.db"\nmodels = "tests.models:MODELS"\n\n'
        '[remote]\nembedded = "remote.db"\n\n[blobs]\ndirectory = "blobs"\n\n'
        '[key]\nfile = "key.hex"\n\n[database_key]\nfile = "db.key"\n'
    )
    synced = run("sync", "--config", str(place / "laptop.toml"))
    assert synced.exit_code == 0, synced.output
    # the environment names it for the commands that take a database path
    with_key = {"REPLICATOR_DATABASE_KEY_FILE": str(place / "db.key")}
    status = run("status", str(place / "writer.db"), env=with_key)
    assert status.exit_code == 0, status.output
    assert f"published {published}" in status.output
    store = ["--blobs", str(place / "blobs"), "--key-file", str(place / "key.hex")]
    new = place / "new.db"
    restored = run(
        "snapshot", "restore", str(new), *store, env={"REPLICATOR_DATABASE_PASSPHRASE": "pw"}
    )
    assert restored.exit_code == 0, restored.output
    assert markers_found(place, [MARK], only=list(place.glob("new.db*"))) == []
    with EncryptedDatabase(str(new), key="pw") as db:
        assert db.execute_sql("SELECT title FROM note").fetchall() == [(MARK,)]
    # a wrong key, and no key: one line each, naming the file
    wrong = run("status", str(new), env=with_key)
    assert wrong.exit_code == 1
    assert f"the key does not open the encrypted database {new}" in wrong.output
    assert "Traceback" not in wrong.output
    none = run("status", str(new))
    assert none.exit_code == 1 and "REPLICATOR_DATABASE_PASSPHRASE" in none.output
    empty = run("status", str(new), env={"REPLICATOR_DATABASE_PASSPHRASE": ""})
    assert empty.exit_code == 1 and "is empty" in empty.output


def test_a_database_key_section_names_one_source(place):
    (place / "bad.toml").write_text(
        'database = "a.db"\nmodels = "tests.models:MODELS"\n\n'
        '[remote]\nembedded = "remote.db"\n\n[database_key]\n'
        'file = "db.key"\npassphrase_env = "X"\n'
    )
    result = run("sync", "--config", str(place / "bad.toml"))
    assert result.exit_code == 1
    assert "[database_key] needs exactly one of file or passphrase_env" in result.output
