"""The replicator command."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from replicator.cli import main


def test_demo_converges_and_prints_an_account(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "all three devices are identical" in result.output
    assert "conflict on note/" in result.output and "merged both" in result.output
    assert "Groceries | milk, eggs, coffee" in result.output  # both edits of the note kept
    assert "dirty rows left: {'phone': 0, 'tablet': 0, 'laptop': 0}" in result.output
    # the whole design: a snapshot from the freshest device, a fourth device logs in
    published = re.search(r"phone   sync: .*published snapshot (\S+)", result.output)
    assert published, result.output
    login = re.search(r"desktop login: restored snapshot (\S+); downloaded 1 note;", result.output)
    assert login and login.group(1) == published.group(1), result.output
    assert "the desktop holds 2 notes and 1 comment, as the others do" in result.output
    # the account reads as English
    assert "uploaded 2 comments and 1 note;" in result.output
    assert "uploaded deletes 0" not in result.output and "downloaded 0" not in result.output
    assert (tmp_path / "blobs" / "snapshots").is_dir()


def test_demo_runs_as_an_installed_command(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module", ["replicator", "replicator.cli"])
def test_python_dash_m_runs_every_command_group(module):
    """``python -m replicator`` and ``python -m replicator.cli`` reach every command, the
    groups defined last included (the outbox group once came after the __main__ block)."""
    for group in ("outbox", "snapshot", "key"):
        result = subprocess.run(
            [sys.executable, "-m", module, group, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "No such command" not in result.stderr
        assert f"{group} [OPTIONS] COMMAND" in result.stdout


def test_status_shows_device_and_pending_changes(tmp_path):
    import peewee

    from replicator import EmbeddedRemote, Replicator
    from tests.models import MODELS, Note

    remote = EmbeddedRemote(tmp_path / "remote.db")
    other = Replicator(peewee.SqliteDatabase(str(tmp_path / "b.db")), MODELS, remote)
    with other.bound():
        Note.create(title="from the other device")
    other.sync()
    db = peewee.SqliteDatabase(str(tmp_path / "a.db"))
    device = Replicator(db, MODELS, remote, device_name="kitchen-tablet")
    with device.bound():
        gone = Note.create(title="synced, then deleted")
        device.sync()
        gone.delete_instance()
        Note.create(title="dirty 1")
        Note.create(title="dirty 2")
    cursor = device.local.tracker("note")
    db.close()
    result = CliRunner().invoke(main, ["status", str(tmp_path / "a.db")])
    assert result.exit_code == 0, result.output
    assert f"installation  {device.installation_id}" in result.output
    assert "device        kitchen-tablet" in result.output
    # 3 rows (the other device's and two new), 2 dirty, 1 delete waiting, the cursor
    assert re.search(rf"note\s+3\s+2\s+1\s+{re.escape(cursor)}", result.output), result.output
    assert re.search(r"comment\s+0\s+0\s+0\s+-", result.output), result.output


def test_status_on_a_plain_database_says_what_to_do(tmp_path):
    import sqlite3

    path = tmp_path / "plain.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    result = CliRunner().invoke(main, ["status", str(path)])
    assert result.exit_code != 0
    assert "create a Replicator on it first" in result.output


def _published(tmp_path, key=None):
    """Publish one snapshot; a given ``key`` is written raw to the key file, else as hex."""
    import peewee

    from replicator import EmbeddedRemote, Replicator, SnapshotKey
    from replicator.stores.directory import DirectoryBlobStore
    from tests.models import MODELS, Note

    if key is None:
        key = bytes(range(32))
        (tmp_path / "key").write_text(key.hex())
    else:
        (tmp_path / "key").write_bytes(key)
    db = peewee.SqliteDatabase(str(tmp_path / "a.db"))
    device = Replicator(
        db,
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
        DirectoryBlobStore(tmp_path / "blobs"),
        SnapshotKey(key),
    )
    with device.bound():
        Note.create(title="in the snapshot")
    report = device.sync()
    db.close()
    return report.snapshot


def test_snapshot_list_verify_restore(tmp_path):
    snapshot_id = _published(tmp_path)
    store = ["--blobs", str(tmp_path / "blobs"), "--key-file", str(tmp_path / "key")]
    runner = CliRunner()
    listed = runner.invoke(main, ["snapshot", "list", *store])
    assert listed.exit_code == 0, listed.output
    assert f"* {snapshot_id}" in listed.output
    verified = runner.invoke(main, ["snapshot", "verify", *store])
    assert verified.exit_code == 0, verified.output
    assert "is intact: 0 comment, 1 note" in verified.output
    restored = runner.invoke(main, ["snapshot", "restore", str(tmp_path / "new.db"), *store])
    assert restored.exit_code == 0, restored.output
    status = runner.invoke(main, ["status", str(tmp_path / "new.db")])
    assert f"snapshot      restored {snapshot_id}" in status.output
    assert re.search(r"note\s+1\s+0\s+0", status.output)  # one row, clean
    published = runner.invoke(main, ["status", str(tmp_path / "a.db")])
    assert f"snapshot      published {snapshot_id}" in published.output
    refused = runner.invoke(main, ["snapshot", "restore", str(tmp_path / "new.db"), *store])
    assert refused.exit_code != 0 and "--force" in refused.output


def test_a_database_restored_by_the_cli_stamps_writes_with_its_own_id(tmp_path):
    """Before any Replicator opens it, an app writing with plain SQL is named by the
    restored database's new installation id, not the publisher's."""
    _published(tmp_path)
    store = ["--blobs", str(tmp_path / "blobs"), "--key-file", str(tmp_path / "key")]
    restored = CliRunner().invoke(main, ["snapshot", "restore", str(tmp_path / "n.db"), *store])
    assert restored.exit_code == 0, restored.output
    conn = sqlite3.connect(tmp_path / "n.db")
    (me,) = conn.execute("SELECT installation_id FROM replicator_device").fetchone()
    (publisher,) = (
        sqlite3.connect(tmp_path / "a.db")
        .execute("SELECT installation_id FROM replicator_device")
        .fetchone()
    )
    conn.execute("UPDATE note SET title = 'edited'")
    conn.execute("INSERT INTO note (id, title, body) VALUES ('n2', 'new', '')")
    conn.commit()
    by = {r[0] for r in conn.execute('SELECT "updatedBy" FROM note')}
    assert by == {me} and me != publisher


def test_snapshot_verify_with_the_wrong_passphrase_says_so(tmp_path, monkeypatch):
    _published(tmp_path)
    monkeypatch.setenv("SNAP_PASS", "not the key")
    result = CliRunner().invoke(
        main,
        ["snapshot", "verify", "--blobs", str(tmp_path / "blobs"), "--passphrase-env", "SNAP_PASS"],
    )
    assert result.exit_code != 0
    assert "WrongKeyError" in result.output


def test_snapshot_restore_refuses_files_it_does_not_manage(tmp_path):
    _published(tmp_path)
    store = ["--blobs", str(tmp_path / "blobs"), "--key-file", str(tmp_path / "key")]
    runner = CliRunner()
    app_db = tmp_path / "app.db"
    conn = sqlite3.connect(app_db)
    conn.execute("CREATE TABLE settings (k TEXT, v TEXT)")
    conn.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    conn.commit()
    conn.close()
    before = app_db.read_bytes()
    refused = runner.invoke(main, ["snapshot", "restore", str(app_db), *store])
    assert refused.exit_code == 1 and "does not manage" in refused.output
    assert "Traceback" not in refused.output and app_db.read_bytes() == before
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    refused = runner.invoke(main, ["snapshot", "restore", str(junk), *store])
    assert refused.exit_code == 1 and "not a SQLite database" in refused.output
    assert junk.read_bytes() == b"this is not a database at all" * 100
    nowhere = runner.invoke(main, ["snapshot", "restore", str(tmp_path / "no" / "x.db"), *store])
    assert nowhere.exit_code == 1 and "does not exist" in nowhere.output
