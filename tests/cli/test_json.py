"""The CLI for scripts: ``--json`` on status, devices, sync and snapshot list prints one
document of the documented shape on stdout (nothing else there), errors included;
``-q`` silences progress and notes; ``-v`` shows the library's log."""

from __future__ import annotations

import json
import re
from pathlib import Path

import peewee
from click.testing import CliRunner

from replicator import DirectoryBlobStore, EmbeddedRemote, Replicator, SnapshotKey
from replicator.cli import main
from tests.models import MODELS, Comment, Note

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def device(tmp_path: Path, name: str, **kw) -> Replicator:
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, EmbeddedRemote(tmp_path / "remote.db"), device_name=name, **kw)


def config(tmp_path: Path, name: str = "phone", blobs: bool = False) -> Path:
    path = tmp_path / f"{name}.toml"
    text = (
        f'database = "{name}.db"\nmodels = "tests.models:MODELS"\ndevice_name = "{name}"\n\n'
        '[remote]\nembedded = "remote.db"\n'
    )
    if blobs:
        text += '\n[blobs]\ndirectory = "blobs"\n\n[key]\nfile = "key"\n'
    path.write_text(text)
    return path


def parsed(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout holds the document and nothing else


def test_status_json(tmp_path):
    a = device(tmp_path, "a")
    with a.bound():
        gone = Note.create(title="synced, then deleted")
        a.sync()
        gone.delete_instance()
        Comment.create(note=Note.create(title="dirty"), text="c")
    a.database.close()
    doc = parsed(run("status", "--json", str(tmp_path / "a.db")))
    assert doc["device"]["name"] == "a"
    assert doc["device"]["installation_id"] == a.installation_id
    assert ISO.match(doc["last_sync"]) and ISO.match(doc["last_upload"])
    assert doc["pending"] == 3
    by_name = {c["name"]: c for c in doc["collections"]}
    assert by_name["note"] == {
        "name": "note",
        "rows": 1,
        "dirty": 1,
        "deletes": 1,
        "downloaded_till": a.local.tracker("note"),
    }
    assert by_name["comment"]["dirty"] == 1
    assert doc["rejected"] == [] and doc["rejected_total"] == 0 and doc["bundles_waiting"] == 0


def test_sync_json_then_devices_json(tmp_path):
    a = device(tmp_path, "phone")
    with a.bound():
        for i in range(3):
            Note.create(title=f"n{i}")
    a.database.close()
    result = run("sync", "--json", "--config", str(config(tmp_path)))
    doc = parsed(result)
    assert doc["uploaded"] == {"note": 3} and doc["downloaded"] == {}
    assert doc["login"] is False and doc["rejected"] == [] and doc["conflicts"] == []
    assert ISO.match(doc["started_at"]) and ISO.match(doc["finished_at"])
    assert doc["usage"]["writes"] >= 3 and doc["summary"]
    assert "upload: 3/3 (100%)" in result.stderr  # progress still on stderr
    devices = parsed(run("devices", "--json", "--config", str(config(tmp_path))))["devices"]
    assert [d["name"] for d in devices] == ["phone"]
    assert ISO.match(devices[0]["last_sync"]) and devices[0]["installation_id"]
    assert set(devices[0]) == {
        "installation_id",
        "name",
        "platform",
        "app_version",
        "last_sync",
        "last_upload",
        "snapshot_generation",
    }


def test_a_failing_command_asked_for_json_prints_its_error_as_json(tmp_path):
    path = config(tmp_path)
    (tmp_path / "phone.db").write_bytes(b"not a database, not at all" * 100)
    result = run("sync", "--json", "--config", str(path))
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["kind"] and error["message"] and error["hint"]
    assert error["retryable"] is False
    assert "Error:" in result.stderr  # the one line, as without --json
    missing = run("snapshot", "list", "--json", "--blobs", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"]["kind"] == "CommandError"


def test_snapshot_list_json(tmp_path):
    (tmp_path / "key").write_text(bytes(range(32)).hex())
    a = device(
        tmp_path,
        "a",
        blobs=DirectoryBlobStore(tmp_path / "blobs"),
        key=SnapshotKey(bytes(range(32))),
    )
    with a.bound():
        Note.create(title="in the snapshot")
    snapshot = a.sync().snapshot
    store = ["--blobs", str(tmp_path / "blobs"), "--key-file", str(tmp_path / "key")]
    doc = parsed(run("snapshot", "list", "--json", *store))
    assert doc["snapshots"] == [
        {
            "id": snapshot,
            "size": doc["snapshots"][0]["size"],
            "sha256": doc["snapshots"][0]["sha256"],
            "latest": True,
        }
    ]
    manifest = doc["manifest"]
    assert manifest["snapshot_id"] == snapshot and manifest["authenticated"] is True
    assert ISO.match(manifest["created"]) and manifest["generation"] == 1
    unchecked = parsed(run("snapshot", "list", "--json", "--blobs", str(tmp_path / "blobs")))
    assert unchecked["manifest"]["authenticated"] is False
    (tmp_path / "none").mkdir()
    empty = parsed(run("snapshot", "list", "--json", "--blobs", str(tmp_path / "none")))
    assert empty == {"snapshots": [], "manifest": None}


def test_quiet_prints_nothing_on_success_and_verbose_shows_the_log(tmp_path):
    a = device(tmp_path, "phone")
    with a.bound():
        Note.create(title="x")
    a.database.close()
    quiet = run("-q", "sync", "--config", str(config(tmp_path)))
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == "", quiet.output
    loud = run("-v", "sync", "--config", str(config(tmp_path)))
    assert loud.exit_code == 0, loud.output
    assert re.search(r"INFO replicator\.engine: sync of phone", loud.stderr), loud.stderr
    again = run("sync", "--config", str(config(tmp_path)))  # -v does not stick
    assert "INFO" not in again.stderr


def test_status_for_people_says_how_long_ago(tmp_path):
    import datetime as dt

    from replicator.cli.sync import time_ago

    a = device(tmp_path, "a")
    a.sync()
    a.database.close()
    result = run("status", str(tmp_path / "a.db"))
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.search(rf"last sync     {when} \(just now\)", result.output), result.output
    cases = {-60: "in the future (clocks differ)", 42: "42 s ago", 200: "3 min ago"}
    cases |= {5 * 3600 + 9: "5 h ago", 36 * 3600: "36 h ago", 12 * 86400: "12 days ago"}
    for seconds, said in cases.items():
        assert time_ago(dt.timedelta(seconds=seconds)) == said
