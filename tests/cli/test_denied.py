"""``replicator status`` and ``replicator denied`` show, export, retry and discard the
writes the remote's rules refused."""

from __future__ import annotations

import json

import peewee
from click.testing import CliRunner

from replicator import EmbeddedRemote, Replicator
from replicator.cli import main
from tests.models import MODELS, Note
from tests.sync.test_denied_writes import refusing, remote_titles


def _device_with_a_denied_row(tmp_path):
    (tmp_path / "phone.toml").write_text(
        'database = "phone.db"\nmodels = "tests.models:MODELS"\ndevice_name = "phone"\n\n'
        '[remote]\nembedded = "remote.db"\n'
    )
    remote = EmbeddedRemote(tmp_path / "remote.db")
    forbidden = refusing(remote, lambda w: w.data.get("title") == "forbidden")
    device = Replicator(peewee.SqliteDatabase(str(tmp_path / "phone.db")), MODELS, forbidden)
    with device.bound():
        Note.create(title="forbidden")
        Note.create(title="fine")
    report = device.sync()
    assert report.denied_counts == {"note": 1}
    device.database.close()
    return tmp_path / "phone.toml", remote


def test_status_and_list_name_the_denied_write_and_why(tmp_path):
    config, _ = _device_with_a_denied_row(tmp_path)
    status = CliRunner().invoke(main, ["status", str(tmp_path / "phone.db")])
    assert status.exit_code == 0, status.output
    assert "the remote's rules refused 1 write, set aside" in status.output
    assert "rules refused the batch" in status.output
    as_json = CliRunner().invoke(main, ["status", "--json", str(tmp_path / "phone.db")])
    shape = json.loads(as_json.stdout)
    assert shape["denied_total"] == 1 and shape["denied"][0]["collection"] == "note"
    listed = CliRunner().invoke(main, ["denied", "list", "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["collection"] == "note" and "rules refused" in row["reason"]


def test_export_then_retry_sends_the_row(tmp_path):
    config, remote = _device_with_a_denied_row(tmp_path)
    out = tmp_path / "denied.jsonl"
    runner = CliRunner()
    result = runner.invoke(main, ["denied", "export", "--config", str(config), str(out)])
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["row"]["title"] == "forbidden"
    retried = runner.invoke(main, ["denied", "retry", "--config", str(config)])
    assert "will retry 1 write(s)" in retried.output
    synced = runner.invoke(main, ["sync", "--config", str(config)])  # no rules here
    assert synced.exit_code == 0 and "uploaded 1 note" in synced.output, synced.output
    assert remote_titles(remote) == {"forbidden", "fine"}


def test_discard_takes_the_remote_version_back(tmp_path):
    config, _ = _device_with_a_denied_row(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["denied", "discard", "--config", str(config)])
    assert result.exit_code == 0 and "discarded 1 write(s)" in result.output, result.output
    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    titles = [r[0] for r in db.execute_sql("SELECT title FROM note ORDER BY title")]
    assert titles == ["fine"]  # the remote never held it: the row goes
    assert db.execute_sql("SELECT COUNT(*) FROM replicator_denied").fetchone() == (0,)
    db.close()
