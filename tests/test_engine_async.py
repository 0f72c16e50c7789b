"""sync_async(): the event loop keeps running while a sync works, and overlapping calls
take turns."""

from __future__ import annotations

import asyncio
import threading
import time

import peewee
import pytest

from replicator import ConfigurationError, EmbeddedRemote, Replicator
from replicator.testing import FaultyRemote
from tests.models import MODELS, Comment, Note


def test_the_loop_keeps_running_while_a_sync_works(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        Comment.create(note=Note.create(title="slow network"), text="x")
    faulty.hooks["push"] = lambda *args: time.sleep(0.4)  # a slow commit
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main():
        tick = asyncio.create_task(ticker())
        report = await a.sync_async()
        tick.cancel()
        return report

    report = asyncio.run(main())
    assert report.uploaded == {"note": 1, "comment": 1}
    assert ticks >= 10, ticks  # the loop ran all through the 0.4 s push


def test_overlapping_calls_take_turns_and_both_finish(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        for i in range(3):
            Note.create(title=f"n{i}")
    running, most = 0, 0
    guard = threading.Lock()

    def slow_push(*args):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with guard:
            running -= 1

    faulty.hooks["push"] = slow_push

    async def main():
        return await asyncio.gather(a.sync_async(), a.sync_async(), a.login_async())

    first, second, third = asyncio.run(main())
    assert most == 1
    assert first.uploaded == {"note": 3}
    assert second.uploaded == {} and third.uploaded == {}
    assert a.dirty_counts() == {"note": 0, "comment": 0}


def test_an_in_memory_database_is_refused_with_a_reason(tmp_path):
    device = Replicator(
        peewee.SqliteDatabase(":memory:"), MODELS, EmbeddedRemote(tmp_path / "r.db")
    )
    with pytest.raises(ConfigurationError, match="database file"):
        asyncio.run(device.sync_async())


def test_cancelling_sync_async_stops_the_waiting_not_the_sync(make_device, remote):
    """What the docs and sync_async's docstring say: the cancelled task ends at once,
    the sync goes on in its worker thread to its end, and a sync asked for after it
    waits for it, without a thread of its own, rather than running beside it."""
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        note = Note.create(title="pushed after the cancel")
    pushing = threading.Event()

    def slow_push(*args):
        pushing.set()
        time.sleep(0.5)

    faulty.hooks["push"] = slow_push

    async def main():
        task = asyncio.create_task(a.sync_async())
        while not pushing.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert note.id not in remote.all_docs("note")  # the push is still under way
        after = asyncio.create_task(a.sync_async())  # waits for the cancelled sync
        await asyncio.sleep(0.1)
        assert not after.done()
        workers = [t for t in threading.enumerate() if t.name.startswith("asyncio_")]
        assert len(workers) == 1, workers  # the cancelled sync's; none waits beside it
        return await after

    after = asyncio.run(main())
    assert after.uploaded == {}
    assert a.dirty_counts()["note"] == 0
    assert note.id in remote.all_docs("note")
