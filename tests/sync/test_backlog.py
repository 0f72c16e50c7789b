"""A device offline for weeks uploads its backlog in streamed batches.

Memory does not grow with the backlog (peak RSS growth of a process uploading
40,000 rows is no more than that of one uploading 10,000, give or take
measurement noise), and a process killed between batches keeps every batch
that committed and was acknowledged: those rows are clean, the batch whose
acknowledgement died with the process is recognised as the device's own, the
next sync sends only the rest, and nothing is duplicated.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import peewee
import pytest

from replicator import EmbeddedRemote, Replicator
from tests.helpers import WORKERS
from tests.models import MODELS, Note

WORKER = WORKERS / "upload_worker.py"


def _run(directory: Path, rows: int, *extra: str) -> subprocess.CompletedProcess:
    directory.mkdir()
    return subprocess.run(
        [sys.executable, str(WORKER), str(directory), str(rows), *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_upload_memory_does_not_grow_with_the_backlog(tmp_path):
    small = _run(tmp_path / "small", 10_000)
    large = _run(tmp_path / "large", 40_000)
    assert small.returncode == 0 and large.returncode == 0, small.stderr + large.stderr
    grow_small, grow_large = int(small.stdout.split()[-1]), int(large.stdout.split()[-1])
    # loading the whole backlog first costs about 1 MB per 1,000 rows here: 30 MB more
    assert grow_large - grow_small <= 10, (grow_small, grow_large)


@pytest.mark.parametrize(
    "kill",
    [
        # right after batch 2 commits remotely: its acknowledgement dies with the process
        ("die-after-push", "2"),
        # while batch 3's journal is written, in the transaction holding batch 2's mark
        ("die-in-journal", "3"),
    ],
    ids=["after-a-push", "while-the-next-batch-is-read"],
)
def test_a_crash_mid_upload_loses_at_most_an_acknowledgement(tmp_path, kill):
    run = _run(tmp_path / "crash", 2_000, *kill)
    assert run.returncode == 17, run.stderr
    remote = EmbeddedRemote(tmp_path / "crash" / "remote.db")
    assert len(remote.all_docs("note")) == 2 * 499
    db = peewee.SqliteDatabase(str(tmp_path / "crash" / "device.db"))
    device = Replicator(db, MODELS, remote, device_name="backlog")
    # the first batch stayed synced; the second is on the remote but still dirty here,
    # recognised as this device's own next time
    assert device.dirty_counts()["note"] == 2_000 - 499
    report = device.sync()
    assert report.conflicts == ()
    assert report.uploaded == {"note": 2_000 - 2 * 499}
    assert len(remote.all_docs("note")) == 2_000
    assert device.dirty_counts()["note"] == 0
    with device.bound():
        assert Note.select().count() == 2_000
        assert Note.select().where(Note.server_id.is_null()).count() == 0


def test_a_long_download_reports_progress_with_a_total(make_device, remote):
    a, b = make_device("a"), make_device("b", page_size=100)
    with a.bound():
        for i in range(450):
            Note.create(title=f"n{i}")
    a.sync()
    seen = []
    b.on_progress = lambda p: seen.append(p) if p.phase == "download" else None
    b.sync()
    notes = [p for p in seen if p.collection == "note"]
    assert notes and all(p.total is not None for p in notes), notes[:3]
    assert notes[0].total >= 450
    assert notes[-1].done == notes[-1].total  # ends at 100%
    assert [p.done for p in notes] == sorted(p.done for p in notes)
