"""Details of the command line a first week of use runs into: each command says what is
true, in words a CLI user can act on, and a command asked to look changes nothing."""

from __future__ import annotations

import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import peewee
import pytest
from click.testing import CliRunner

from replicator import EmbeddedRemote, Outbox, Replicator
from replicator.cli import main
from replicator.testing import SEED_CONFIGS
from tests.cli.test_commands import _published
from tests.helpers import ROOT, TESTS
from tests.models import MODELS, Note


def run(*args: str, **kw: object):
    return CliRunner(**kw).invoke(main, list(args))  # type: ignore[arg-type]


def _device_config(tmp_path: Path, name: str = "phone") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'database = "{name}.db"\nmodels = "tests.models:MODELS"\ndevice_name = "{name}"\n\n'
        '[remote]\nembedded = "remote.db"\n'
    )
    return path


def _write_notes(tmp_path: Path, name: str = "phone", n: int = 2) -> None:
    device = Replicator(
        peewee.SqliteDatabase(str(tmp_path / f"{name}.db")),
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
        device_name=name,
    )
    with device.bound():
        for i in range(n):
            Note.create(title=f"note {i}")
    device.database.close()


def _tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master ORDER BY name")]
    finally:
        conn.close()


# -- outbox status only looks --------------------------------------------------------------


def test_outbox_status_reads_the_file_without_writing_to_it(tmp_path):
    events = tmp_path / "events.db"
    box = Outbox(events)
    box.init(json.loads(SEED_CONFIGS))
    box.save("TELEMETRY", {"eid": "IMPRESSION"})
    box.close()
    before = events.read_bytes()
    result = run("outbox", "status", str(events))
    assert result.exit_code == 0, result.output
    assert re.search(r"TELEMETRY\s+1\s", result.output), result.output
    assert events.read_bytes() == before


def test_outbox_status_of_a_file_that_is_no_outbox_says_so_and_creates_nothing(tmp_path):
    for path in (tmp_path / "empty.db", tmp_path / "new.sqlite"):
        if path.suffix == ".db":
            path.write_bytes(b"")  # an empty file: SQLite would make it an outbox
        else:
            sqlite3.connect(path).close()
        result = run("outbox", "status", str(path))
        assert result.exit_code == 1, result.output
        assert "not an outbox" in result.output and "Traceback" not in result.output
        assert _tables(path) == [] and path.stat().st_size == 0


# -- compact names only what exists ---------------------------------------------------------


def test_compact_refuses_a_collection_the_remote_does_not_hold(tmp_path):
    _write_notes(tmp_path)
    Replicator(
        peewee.SqliteDatabase(str(tmp_path / "phone.db")),
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
    ).sync()
    result = run("compact", "--embedded", str(tmp_path / "remote.db"), "--collection", "nosuch")
    assert result.exit_code != 0
    assert "'nosuch'" in result.output and "note" in result.output
    assert "purged" not in result.output
    ok = run("compact", "--embedded", str(tmp_path / "remote.db"), "--collection", "note")
    assert ok.exit_code == 0 and "note: 0 tombstone(s) purged" in ok.output


# -- devices and status show times, not cursors ---------------------------------------------


def test_devices_and_status_show_when_not_a_cursor(tmp_path):
    _write_notes(tmp_path)
    config = _device_config(tmp_path)
    assert run("sync", "--config", str(config)).exit_code == 0
    devices = run("devices", "--config", str(config))
    assert devices.exit_code == 0, devices.output
    assert "last sync" in devices.output
    assert not re.search(r"\b0{8,}\d+\b", devices.output), devices.output  # no raw cursor
    [phone] = [line for line in devices.output.splitlines() if line.startswith("phone")]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", phone), phone
    assert "change 3" in phone  # what the embedded store knows: the position, said as such
    status = run("status", str(tmp_path / "phone.db"))
    assert re.search(r"last upload   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", status.output)


def test_status_tells_the_last_upload_of_a_sync_that_only_sent_bundles(tmp_path):
    (tmp_path / "campaign.py").write_text((TESTS / "campaign_models.py").read_text())
    service = tmp_path / "service.toml"
    service.write_text(
        'models = "campaign:MODELS"\n[remote]\nembedded = "remote.db"\n'
        '[bundles]\ncollections = ["households"]\ningest_queue = true\ndirectory = "bucket"\n'
    )
    config = tmp_path / "collector.toml"
    config.write_text(
        'database = "collector.db"\nmodels = "campaign:MODELS"\ndevice_name = "collector"\n'
        'download_only = ["form_schemas", "localizations"]\n[remote]\nembedded = "remote.db"\n'
        '[bundles]\ncollections = ["households"]\ningest_queue = true\ndirectory = "bucket"\n'
    )
    from replicator.cli.config import DeviceConfig

    device = DeviceConfig.load(config).replicator()
    households = next(m for m in device.models if m._meta.table_name == "households")
    with device.bound():
        households.create(head="Ana")
    device.database.close()
    assert run("sync", "--config", str(config)).exit_code == 0  # the bundle goes up
    assert run("ingest", "--config", str(service), "--once").exit_code == 0
    synced = run("sync", "--config", str(config))  # the service's answer: accepted
    assert "bundled 1 household" in synced.output, synced.output
    status = run("status", str(tmp_path / "collector.db"))
    assert "last upload   never" not in status.output, status.output
    assert re.search(r"last upload   \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", status.output)


# -- the progress line ---------------------------------------------------------------------


def test_progress_in_a_log_is_plain_lines_and_every_step_ends(tmp_path):
    _write_notes(tmp_path, n=3)
    result = run("sync", "--config", str(_device_config(tmp_path)))
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert "register: 1/1 (100%)" in lines, result.stderr
    assert "upload: 3/3 (100%)" in lines, result.stderr
    assert len(lines) == len(set(lines))  # each state once


def test_progress_on_a_terminal_is_a_bar_per_step(tmp_path):
    _write_notes(tmp_path, n=3)
    config = _device_config(tmp_path)
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "replicator", "sync", "--config", str(config)],
        stderr=follower,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = seen.decode()
    # click's progress bar: a line per step, redrawn in place (the pty writes \r\n)
    assert re.search(r"\r\S*register +\[#+\]  100%  1/1", text), text
    assert re.search(r"\r\S*upload +\[#+\]  100%  3/3", text), text
    assert text.count("\n") == 2, text


# -- outbox requeue and ingest refuse what they cannot do ----------------------------------


def test_outbox_requeue_of_an_unknown_message_fails_naming_it(tmp_path):
    events = tmp_path / "events.db"
    Outbox(events).close()
    result = run("outbox", "requeue", str(events), "--msg-id", "nosuch-id")
    assert result.exit_code == 1 and "nosuch-id" in result.output, result.output


def test_ingest_once_with_serve_is_refused(tmp_path):
    config = tmp_path / "service.toml"
    config.write_text('models = "tests.models:MODELS"\n[remote]\nembedded = "remote.db"\n')
    for serve in ("nonsense", "127.0.0.1:0"):  # a bad address, and the combination itself
        result = run("ingest", "--config", str(config), "--once", "--serve", serve)
        assert result.exit_code == 2, result.output
        assert "--serve" in result.output
    assert "--once" in result.output


# -- snapshot commands ---------------------------------------------------------------------


def test_snapshot_list_shows_readable_sizes(tmp_path):
    _published(tmp_path)
    result = run("snapshot", "list", "--blobs", str(tmp_path / "blobs"))
    assert result.exit_code == 0, result.output
    assert " MB " not in result.output
    assert re.search(r"\s\d+(\.\d)? (B|KiB|MiB)\s", result.output), result.output


def test_snapshot_restore_without_a_key_or_a_terminal_names_the_options(tmp_path):
    _published(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "replicator",
            "snapshot",
            "restore",
            str(tmp_path / "new.db"),
            "--blobs",
            str(tmp_path / "blobs"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,  # no controlling terminal for getpass to open
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "GetPassWarning" not in result.stderr and "Traceback" not in result.stderr
    assert "--key-file" in result.stderr and "--passphrase-env" in result.stderr
    assert not (tmp_path / "new.db").exists()


def test_an_unset_passphrase_variable_is_called_unset_and_an_empty_one_empty(tmp_path):
    _published(tmp_path)
    args = ["snapshot", "verify", "--blobs", str(tmp_path / "blobs"), "--passphrase-env", "P"]
    unset = run(*args, env={"P": None})
    assert unset.exit_code == 1 and "$P is not set" in unset.output, unset.output
    empty = run(*args, env={"P": ""})
    assert empty.exit_code == 1 and "$P is empty" in empty.output, empty.output


def test_restore_over_synced_data_tells_a_cli_user_the_flag(tmp_path):
    _published(tmp_path)
    result = run(
        "snapshot",
        "restore",
        str(tmp_path / "a.db"),  # the publisher's own database: synced data
        "--blobs",
        str(tmp_path / "blobs"),
        "--key-file",
        str(tmp_path / "key"),
    )
    assert result.exit_code == 1
    assert "--force" in result.output and "force=True" not in result.output, result.output


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
    return out


@pytest.mark.parametrize("command", _commands(main), ids=" ".join)
def test_help_texts_are_plain_text(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "`" not in result.output, result.output
