"""Replicator.status: syncing or idle, the phase and its fraction, when it last synced,
the last error with its hint, the pending count; told to subscribers on any thread
and streamed to an asyncio app."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import threading
from pathlib import Path

import peewee
import pytest

from replicator import EmbeddedRemote, OfflineError, Replicator, SyncStatus
from tests.models import MODELS, Note


@pytest.fixture
def device(tmp_path: Path):
    opened: list[Replicator] = []

    def make(name: str, remote_path: Path | None = None, **kw) -> Replicator:
        remote = EmbeddedRemote(remote_path or tmp_path / "remote" / "remote.db")
        db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
        rep = Replicator(db, MODELS, remote, device_name=name, **kw)
        opened.append(rep)
        return rep

    (tmp_path / "remote").mkdir()
    yield make
    for rep in opened:
        rep.close()


def write(rep: Replicator, n: int, prefix: str = "n") -> None:
    with rep.bound(), rep.database.atomic():
        for i in range(n):
            Note.create(id=f"{prefix}{i}", title=f"note {i}")


def test_a_new_device_has_never_synced_and_counts_what_waits(device):
    a = device("a")
    assert a.status == SyncStatus()
    assert a.status.activity == "stopped"
    write(a, 3)
    with a.bound():
        Note.delete().where(Note.id == "n0").execute()
    a.sync()
    s = a.status
    assert (s.syncing, s.has_synced, s.pending, s.last_error) == (False, True, 0, None)
    assert s.last_synced_at is not None
    assert dt.datetime.now(dt.timezone.utc) - s.last_synced_at < dt.timedelta(seconds=30)


def test_the_status_survives_a_restart(device, tmp_path):
    a = device("a")
    a.sync()
    write(a, 2)
    a.database.close()
    again = device("a")  # the same file
    assert again.status.has_synced
    assert again.status.last_synced_at is not None
    assert again.status.pending == 2


def test_subscribers_see_syncing_each_phase_with_its_fraction_then_idle(device):
    a, b = device("a"), device("b", page_size=10)
    write(a, 35)
    a.sync()
    seen: list[SyncStatus] = []
    threads: set[int] = set()

    def told(s: SyncStatus) -> None:
        seen.append(s)
        threads.add(threading.get_ident())

    unsubscribe = b.on_status(told)
    worker = threading.Thread(target=b.sync)  # statuses are told on the syncing thread
    worker.start()
    worker.join()
    assert threads == {worker.ident}
    assert seen[0].syncing and seen[0].phase is None
    downloads = [s.fraction for s in seen if s.phase == "download" and s.collection == "note"]
    assert downloads == sorted(downloads) and downloads[-1] == 1.0, downloads
    assert len(downloads) >= 4  # 35 rows in pages of 10
    assert all(s.syncing for s in seen[:-1])
    last = seen[-1]
    assert (last.syncing, last.phase, last.fraction, last.has_synced) == (False, None, None, True)
    assert last == b.status
    unsubscribe()
    b.sync()
    assert seen[-1] is last  # nothing told after unsubscribing


def test_an_error_shows_with_its_hint_and_whether_retrying_helps(device, tmp_path):
    a = device("a")
    a.sync()
    write(a, 1)
    shutil.move(tmp_path / "remote", tmp_path / "gone")  # the share is unmounted
    with pytest.raises(OfflineError):
        a.sync()
    err = a.status.last_error
    assert err is not None and err.kind == "OfflineError" and err.retryable
    assert err.hint and "sync again" in err.hint
    assert a.status.pending == 1 and not a.status.syncing
    synced = a.status.last_synced_at
    assert synced is not None  # the last success is kept
    shutil.move(tmp_path / "gone", tmp_path / "remote")
    a.sync()
    assert a.status.last_error is None and a.status.pending == 0
    assert a.status.last_synced_at is not None and a.status.last_synced_at >= synced


def test_a_subscriber_that_raises_does_not_break_the_sync(device, caplog):
    a = device("a")
    a.on_status(lambda s: 1 / 0)
    write(a, 1)
    assert a.sync().uploaded == {"note": 1}
    assert a.status.pending == 0
    assert "status subscriber raised" in caplog.text


def test_an_async_app_streams_the_status_on_its_loop(device):
    a, b = device("a"), device("b", page_size=5)
    write(a, 20)
    a.sync()

    async def main() -> list[SyncStatus]:
        loop_thread = threading.get_ident()
        got: list[SyncStatus] = []

        async def follow() -> None:
            async with contextlib.aclosing(b.statuses()) as stream:
                async for s in stream:
                    assert threading.get_ident() == loop_thread
                    got.append(s)
                    if s.has_synced and not s.syncing:
                        return

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0)  # subscribed before the sync starts
        await b.sync_async()
        await asyncio.wait_for(follower, 10)
        return got

    got = asyncio.run(main())
    assert got[0] == SyncStatus()
    assert any(s.syncing for s in got)
    assert got[-1].has_synced and got[-1].pending == 0
    assert not b._board._listeners  # the stream unsubscribed when closed


def test_a_restore_shows_as_busy_then_ends_clean(device, tmp_path):
    from replicator import DirectoryBlobStore, SnapshotKey

    key = SnapshotKey(bytes(range(32)))
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    a = device("a", blobs=blobs, key=key)
    write(a, 30)
    assert a.sync().snapshot is not None
    b = device("b", blobs=blobs, key=key)
    seen: list[SyncStatus] = []
    b.on_status(seen.append)
    b.restore()
    assert seen[0].syncing and seen[0].phase == "restore"
    assert [s for s in seen if s.phase == "restore" and s.fraction == 1.0]
    last = b.status
    assert (last.syncing, last.phase, last.fraction, last.has_synced) == (False, None, None, False)
