"""Rows a sync cannot upload are named with their reason: by ``replicator sync`` as it
happens, and by ``replicator status`` afterwards (what the last sync rejected, and the
remote documents set aside), so a row that stays dirty for ever says why."""

from __future__ import annotations

import sqlite3

import peewee
from click.testing import CliRunner

from replicator import EmbeddedRemote, Replicator
from replicator.cli import main
from tests.models import MODELS, Note


def _device_with_a_bad_row(tmp_path):
    (tmp_path / "phone.toml").write_text(
        'database = "phone.db"\nmodels = "tests.models:MODELS"\ndevice_name = "phone"\n\n'
        '[remote]\nembedded = "remote.db"\n'
    )
    device = Replicator(
        peewee.SqliteDatabase(str(tmp_path / "phone.db")),
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
    )
    with device.bound():
        Note.create(id="shop/list", title="an id no store can name")
        Note.create(title="fine")
    device.database.close()
    return tmp_path / "phone.toml"


def test_sync_names_each_rejected_row_and_why(tmp_path):
    config = _device_with_a_bad_row(tmp_path)
    result = CliRunner().invoke(main, ["sync", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "uploaded 1 note" in result.stdout and "1 row rejected" in result.stdout
    assert "rejected note/shop/list: UnsupportedValueError:" in result.stdout
    assert "is not a row id" in result.stdout


def test_status_shows_what_the_last_sync_rejected(tmp_path):
    config = _device_with_a_bad_row(tmp_path)
    status = CliRunner().invoke(main, ["status", str(tmp_path / "phone.db")])
    assert "rejected" not in status.output  # no sync yet: nothing to say
    assert CliRunner().invoke(main, ["sync", "--config", str(config)]).exit_code == 0
    status = CliRunner().invoke(main, ["status", str(tmp_path / "phone.db")])
    assert status.exit_code == 0, status.output
    assert "the last sync rejected 1 row (it stays dirty until fixed):" in status.output
    assert "note/shop/list: UnsupportedValueError:" in status.output
    assert "is not a row id" in status.output
    # once the app fixes the row, the next sync rejects nothing and status says so
    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    db.execute_sql("DELETE FROM note WHERE id = 'shop/list'")
    db.close()
    assert CliRunner().invoke(main, ["sync", "--config", str(config)]).exit_code == 0
    status = CliRunner().invoke(main, ["status", str(tmp_path / "phone.db")])
    assert "rejected" not in status.output, status.output


def test_status_names_remote_documents_set_aside_and_why(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    writer = Replicator(peewee.SqliteDatabase(str(tmp_path / "w.db")), MODELS, remote)
    with writer.bound():
        Note.create(title="fine")
    writer.sync()
    # a document another writer damaged: its title is not text
    conn = sqlite3.connect(remote.path)
    conn.execute("UPDATE docs SET data = ? WHERE collection = 'note'", ('{"title": 42}',))
    conn.commit()
    conn.close()
    reader = Replicator(peewee.SqliteDatabase(str(tmp_path / "r.db")), MODELS, remote)
    assert len(reader.sync().set_aside) == 1
    reader.database.close()
    status = CliRunner().invoke(main, ["status", str(tmp_path / "r.db")])
    assert "1 remote document set aside (retried at every sync):" in status.output
    assert "note/" in status.output and "title holds a int" in status.output
