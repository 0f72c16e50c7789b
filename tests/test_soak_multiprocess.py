"""Soak: 4 processes, each with an app thread writing while it syncs, end converged.

Each worker (``soak_worker.py``) commits notes with comments, edits and
cascading deletes from an app thread while its main thread syncs in a loop,
all against one embedded remote file. Afterwards every device holds the same
rows, nothing is dirty, no comment is orphaned, and every note or comment that
was created and not deleted (directly or by its note's cascade) is everywhere.
``REPLICATOR_SOAK_SECONDS`` (default 6) sets how long the workers run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import peewee
from conftest import snapshot_rows

from replicator import EmbeddedRemote, Replicator
from replicator.demo import MODELS

SECONDS = float(os.environ.get("REPLICATOR_SOAK_SECONDS", "6"))
WORKER = Path(__file__).with_name("soak_worker.py")


def test_four_processes_writing_and_syncing_converge(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    names = [f"w{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(tmp_path / f"{n}.db"),
                str(remote.path),
                n,
                str(SECONDS),
                str(tmp_path / f"{n}.json"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    for p in procs:
        _, err = p.communicate(timeout=SECONDS * 4 + 120)
        assert p.returncode == 0, err
    logs = [json.loads((tmp_path / f"{n}.json").read_text()) for n in names]
    devices = [
        Replicator(
            peewee.SqliteDatabase(str(tmp_path / f"{n}.db"), pragmas={"foreign_keys": 1}),
            MODELS,
            remote,
            device_name=n,
        )
        for n in names
    ]
    for _ in range(3):
        for device in devices:
            device.sync()
    views = [snapshot_rows(d) for d in devices]
    assert all(v == views[0] for v in views[1:]), "devices differ"
    for device in devices:
        assert sum(device.dirty_counts().values()) == 0
        assert device.local.parked() == {}
    db = devices[0].database
    assert db.execute_sql(
        "SELECT COUNT(*) FROM comment WHERE note_id NOT IN (SELECT id FROM note)"
    ).fetchone() == (0,)
    deleted = {i for log in logs for i in log["deleted_notes"]}
    notes = {i for log in logs for i in log["notes"]} - deleted
    comments = {c for log in logs for c, n in log["comments"] if n not in deleted}
    assert {r[0] for r in db.execute_sql("SELECT id FROM note")} == notes
    assert {r[0] for r in db.execute_sql("SELECT id FROM comment")} == comments
    live = {i for i, d in remote.all_docs("note").items() if not d.deleted}
    assert live == notes
    assert sum(len(log["notes"]) for log in logs) > 20, "the soak wrote too little to bite"
    for device in devices:
        device.database.close()
