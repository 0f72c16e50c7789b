"""Devices in separate processes sync into one remote at the same time, and converge."""

from __future__ import annotations

import os
import subprocess
import sys

from replicator import EmbeddedRemote
from tests.helpers import WORKERS, snapshot_rows
from tests.models import Comment, Note

WORKER = WORKERS / "device_worker.py"


def spec(remote):
    if isinstance(remote, EmbeddedRemote):
        return str(remote.path)
    host = os.environ["FIRESTORE_EMULATOR_HOST"]
    return f"firestore:{host}:{remote.client.project}:{remote.root}"


def spawn(db, remote, name, rounds, *extra):
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), spec(remote), name, str(rounds), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_sync_concurrently_and_converge(tmp_path, make_device, remote):
    procs = [spawn(tmp_path / f"{n}.db", remote, n, 15) for n in ("p1", "p2")]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    p1, p2 = make_device("p1"), make_device("p2")
    for device in (p1, p2, p1):
        device.sync()
    assert snapshot_rows(p1) == snapshot_rows(p2)
    with p1.bound():
        assert Note.select().count() == 30
        assert Comment.select().count() == 30
    assert len(remote.all_docs("note")) == 30  # no duplicates
    assert p1.dirty_counts() == p2.dirty_counts() == {"note": 0, "comment": 0}


def test_process_killed_after_commit_before_mark_clean(tmp_path, make_device, remote):
    proc = spawn(tmp_path / "k.db", remote, "k", 1, "crash-after-push")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 17, err
    assert len(remote.all_docs("note")) == 1
    k = make_device("k")
    assert k.dirty_counts()["note"] == 1  # it never learned the upload landed
    report = k.sync()
    assert report.conflicts == ()
    assert k.dirty_counts() == {"note": 0, "comment": 0}
    assert len(remote.all_docs("note")) == 1
    other = make_device("other")
    other.sync()
    assert snapshot_rows(other) == snapshot_rows(k)
