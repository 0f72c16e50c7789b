"""``replicator sync``, ``snapshot publish``, ``snapshot restore --id`` and ``devices``
driven by a device's config file."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import peewee
import pytest
from click.testing import CliRunner

from replicator import DirectoryBlobStore, EmbeddedRemote, Replicator, SnapshotKey
from replicator.cli import main
from tests.models import MODELS, Note

KEY = bytes(range(32))

MODELS_MODULE = """
import peewee
from replicator import SyncModel

class Task(SyncModel):
    title = peewee.TextField()
"""


def write_config(directory: Path, name: str, database: str, models: str = "tests.models:MODELS"):
    path = directory / f"{name}.toml"
    path.write_text(
        f'database = "{database}"\nmodels = "{models}"\ndevice_name = "{name}"\n\n'
        '[remote]\nembedded = "remote.db"\n\n[blobs]\ndirectory = "blobs"\n\n'
        '[key]\nfile = "key.hex"\n'
    )
    return path


@pytest.fixture
def place(tmp_path):
    (tmp_path / "key.hex").write_text(KEY.hex())
    (tmp_path / "blobs").mkdir()
    return tmp_path


def writer(place: Path, snapshots: bool = True) -> Replicator:
    db = peewee.SqliteDatabase(str(place / "writer.db"))
    return Replicator(
        db,
        MODELS,
        EmbeddedRemote(place / "remote.db"),
        DirectoryBlobStore(place / "blobs") if snapshots else None,
        SnapshotKey(KEY) if snapshots else None,
        device_name="writer",
    )


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def count_notes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM note").fetchone()[0]
    finally:
        conn.close()


def test_sync_shows_a_percentage_and_the_account(place):
    w = writer(place, snapshots=False)  # no snapshot: the new device downloads it all
    with w.bound(), w.database.atomic():
        for i in range(1200):
            Note.create(title=f"n{i}")
    w.sync()
    config = write_config(place, "laptop", "laptop.db")
    result = CliRunner().invoke(main, ["sync", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "(100%)" in result.output  # the progress line (stderr, mixed in by the runner)
    assert re.search(r"download note: \d+/1200 \(\d+%\)", result.output), result.output
    assert "downloaded 1,200 notes;" in result.output.splitlines()[-1]  # the account
    assert count_notes(place / "laptop.db") == 1200


def test_a_new_device_logs_in_from_the_snapshot(place):
    w = writer(place)
    with w.bound():
        Note.create(title="in the snapshot")
    assert w.sync().snapshot is not None
    result = run("sync", "--config", str(write_config(place, "new", "new.db")))
    assert result.exit_code == 0, result.output
    assert "restore:" in result.output and "restored snapshot" in result.output
    assert count_notes(place / "new.db") == 1


def publish_twice(place: Path) -> tuple[str, str]:
    """A note, a snapshot by ``replicator snapshot publish``, another note, another
    snapshot: the ids of the older and the newest."""
    w = writer(place)
    config = write_config(place, "phone", "phone.db")
    published = []
    for title in ("first", "second"):
        with w.bound():
            Note.create(title=title)
        w.sync()
        result = run("snapshot", "publish", "--config", str(config))
        assert result.exit_code == 0, result.output
        published.append(result.output.strip().split()[-1])
    older, newest = published
    assert newest != older
    return older, newest


def test_publish_then_restore_an_older_snapshot_by_id(place):
    older, newest = publish_twice(place)
    listed = run("snapshot", "list", "--blobs", str(place / "blobs"))
    assert older in listed.output and f"* {newest}" in listed.output

    store = ["--blobs", str(place / "blobs"), "--key-file", str(place / "key.hex")]
    restored = run("snapshot", "restore", str(place / "old.db"), "--id", older, *store)
    assert restored.exit_code == 0, restored.output
    assert f"restored snapshot {older}" in restored.output
    assert count_notes(place / "old.db") == 1
    # the restored device syncs what came after its snapshot
    synced = run("sync", "--config", str(write_config(place, "old", "old.db")))
    assert synced.exit_code == 0, synced.output
    assert count_notes(place / "old.db") == 2

    unknown = run("snapshot", "restore", str(place / "x.db"), "--id", "20200101T000000000000Z-0")
    assert unknown.exit_code != 0
    unknown = run("snapshot", "restore", str(place / "x.db"), "--id", "nope", *store)
    assert unknown.exit_code == 1 and "SnapshotNotFoundError" in unknown.output
    assert not (place / "x.db").exists()  # a failed restore into a new file leaves none


def test_an_older_snapshot_swapped_for_another_is_refused(place):
    older, newest = publish_twice(place)
    # the bucket's writer puts the newest snapshot's bytes under the older one's name
    blobs = place / "blobs" / "snapshots"
    # and its size and hash as the store reports them, so only the header can tell
    (blobs / f"{older}.snap").write_bytes((blobs / f"{newest}.snap").read_bytes())
    meta = (blobs / f"{newest}.snap.meta.json").read_text()
    (blobs / f"{older}.snap.meta.json").write_text(meta)
    store = ["--blobs", str(place / "blobs"), "--key-file", str(place / "key.hex")]
    result = run("snapshot", "restore", str(place / "old.db"), "--id", older, *store)
    assert result.exit_code == 1, result.output
    assert "TamperedSnapshotError" in result.output and "another snapshot" in result.output
    assert not (place / "old.db").exists() or "note" not in {
        r[0] for r in sqlite3.connect(place / "old.db").execute("SELECT name FROM sqlite_master")
    }


def test_devices_refuses_a_remote_that_does_not_exist(place):
    config = write_config(place, "lost", "lost.db")
    result = run("devices", "--config", str(config))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not (place / "remote.db").exists()


def test_devices_lists_the_devices_collection(place):
    w = writer(place)
    with w.bound():
        Note.create(title="x")
    w.sync()
    config = write_config(place, "tablet", "tablet.db")
    assert run("sync", "--config", str(config)).exit_code == 0
    result = run("devices", "--config", str(config))
    assert result.exit_code == 0, result.output
    names = [line.split()[0] for line in result.output.splitlines()[1:]]
    assert names == ["tablet", "writer"]


def test_a_models_module_beside_the_config_file(place):
    (place / "todo_models.py").write_text(MODELS_MODULE)
    config = write_config(place, "todo", "todo.db", models="todo_models")
    result = run("sync", "--config", str(config))
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(place / "todo.db")
    assert conn.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)
    conn.close()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("database = ", "not valid TOML"),
        ('database = "a.db"\nmodels = "tests.models:MODELS"\ncolour = 1\n', "unknown key"),
        ('models = "tests.models:MODELS"\n[remote]\nembedded = "r.db"\n', "database"),
        (
            'database = "a.db"\nmodels = "no_such_module_here"\n[remote]\nembedded = "r.db"\n',
            "import",
        ),
        ('database = "a.db"\nmodels = "tests.models:MODELS"\n[remote]\n', "exactly one"),
        (
            'database = "a.db"\nmodels = "tests.models:MODELS"\n[remote]\nembedded = "r.db"\n'
            '[blobs]\ndirectory = "b"\n',
            "[key]",
        ),
        (
            'database = "a.db"\nmodels = "tests.models:MODELS"\n[remote]\nembedded = "r.db"\n'
            '[blobs]\ndirectory = "b"\n[key]\nfile = "missing.hex"\n',
            "key file",
        ),
        ('database = "a.db"\nmodels = "tests.models"\n[remote]\nembedded = 5\n', "string"),
    ],
)
def test_a_wrong_config_file_is_one_line(place, text, says):
    path = place / "bad.toml"
    path.write_text(text)
    commands = [["sync"]]
    if says != "import":  # that file names no blob store: publish stops at that first
        commands.append(["snapshot", "publish"])
    if says not in ("import", "key file"):  # devices reads the remote only
        commands.append(["devices"])
    for command in commands:
        result = run(*command, "--config", str(path))
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and says in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_every_mistake_of_a_config_file_is_named_at_once_with_its_type(place):
    path = place / "bad.toml"
    path.write_text(
        'database = "a.db"\nmodels = 3\ncolour = 1\ndownload_only = "note"\n'
        '[remote]\nembedded = "r.db"\nembeded = "typo.db"\n'
        '[bundles]\ncollections = ["note"]\ningest_queue = "yes"\n'
    )
    result = run("sync", "--config", str(path))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    for said in (
        "models must be a non-empty string (str), not 3",
        "download_only must be a list of table names",
        "bundles.ingest_queue must be true or false (bool), not 'yes'",
        "unknown key(s) ['embeded'] (known: ['embedded', 'firestore_project', 'firestore_root'])"
        " in [remote]",
        "unknown key(s) ['colour']",
    ):
        assert said in result.output, result.output
