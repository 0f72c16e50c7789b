"""An app that writes while a bundle sync runs loses nothing: at every statement
position of one collector sync in turn, the app commits a new registration and an
edit of one already bundled (WAL, so the commit lands between the engine's
statements). After a few more syncs the service holds exactly the collector's rows.
REPLICATOR_BUNDLE_APPWRITE_STEP=1 tries every position (default: every 4th)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import Bundles, DirectoryBlobStore, EmbeddedRemote, HttpIngest, Ingestor, Replicator
from tests.campaign_models import MODELS, REFERENCE, Household
from tests.helpers import sync_with_app_commit_at

sqlite3.enable_callback_tracebacks(True)


def _collector(tmp_path: Path, url: str) -> Replicator:
    db = peewee.SqliteDatabase(
        str(tmp_path / "c.db"), pragmas={"foreign_keys": 1, "journal_mode": "wal"}
    )
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    return Replicator(
        db,
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
        bundles=Bundles(blobs, HttpIngest(url), [Household], max_rows=4),
        download_only=REFERENCE,
    )


def _run(tmp_path: Path, position: int) -> tuple[bool, dict[Any, Any], dict[Any, Any]]:
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    ingestor = Ingestor(blobs, EmbeddedRemote(tmp_path / "remote.db"), MODELS)
    with ingestor.serve() as server:
        device = _collector(tmp_path, server.url)
        with device.bound():
            ids = [Household.create(head=f"h{i}").id for i in range(10)]
        injected = sync_with_app_commit_at(
            device,
            tmp_path / "c.db",
            position,
            [
                (
                    "INSERT INTO households (id, head, members, village) VALUES (?, 'app', 2, '')",
                    (str(uuid.uuid4()),),
                ),
                ("UPDATE households SET head = 'edited' WHERE id = ?", (ids[1],)),
            ],
        )
        for _ in range(3):
            device.sync()
        local = {
            r[0]: (r[1], r[2])
            for r in device.database.execute_sql("SELECT id, head, members FROM households")
        }
        dirty = device.pending_count()
        device.database.close()
    docs = EmbeddedRemote(tmp_path / "remote.db").all_docs("households")
    remote = {i: (d.data["head"], d.data["members"]) for i, d in docs.items()}
    assert dirty == 0
    return injected, local, remote


#: a sync of this test makes about 95 statements; every STEP-th gets the app's write
STEP = int(os.environ.get("REPLICATOR_BUNDLE_APPWRITE_STEP", "4"))


@pytest.mark.parametrize("position", range(1, 100, STEP))
def test_an_app_write_at_any_statement_of_a_bundle_sync_is_kept(tmp_path, position):
    injected, local, remote = _run(tmp_path, position)
    assert remote == local
    if injected:
        assert len(local) == 11 and sum(1 for h, _ in local.values() if h == "edited") == 1
