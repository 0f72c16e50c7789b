"""The app's code a sync runs (change listeners, on_conflict, on_progress, the conflict
strategy) cannot start another sync, login or restore of the same device: the call is
refused with ConfigurationError instead of waiting for itself for ever; a sync asked for
from another thread still waits its turn."""

from __future__ import annotations

import threading
import time

import pytest

from replicator import ConfigurationError, Passphrase
from replicator.stores.directory import DirectoryBlobStore
from replicator.testing import FaultyRemote
from tests.models import Note

#: long enough for any of these small syncs; a deadlocked one never ends
DEADLINE = 60

#: the lock is the engine's, whatever the store: the embedded one is enough
pytestmark = pytest.mark.parametrize("remote", ["embedded"], indirect=True)


def finishes(call, *args):
    """Run ``call`` in a thread; return what it returned or raised, or fail the test
    if it has not ended by the deadline (a deadlock)."""
    out: dict[str, object] = {}

    def run():
        try:
            out["result"] = call(*args)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), f"{call.__name__} never returned: the device deadlocked"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["result"]


class CallsBack:
    """A callback calling ``what`` (sync, login or restore) on ``device`` once, keeping
    what the call raised."""

    def __init__(self, what):
        self.what = what
        self.device = None
        self.errors: list[BaseException] = []

    def __call__(self, *args):
        if self.device is not None and not self.errors:
            try:
                getattr(self.device, self.what)()
            except Exception as exc:
                self.errors.append(exc)
        return args[2] if len(args) == 4 else None  # as a conflict strategy: the remote

    def assert_refused(self):
        assert len(self.errors) == 1, "the callback never ran"
        error = self.errors[0]
        assert isinstance(error, ConfigurationError), repr(error)
        assert f"{self.what}() was called from inside this device's own sync" in str(error)
        assert "flag" in error.hint and "once this sync has returned" in error.hint
        assert not error.retryable


def with_blobs(tmp_path):
    return {"blobs": DirectoryBlobStore(tmp_path / "blobs"), "key": Passphrase("pw for tests")}


def a_conflict(make_device, **kw):
    """Device ``a`` whose next sync meets a conflict (``b`` edited the same note)."""
    a, b = make_device("a", **kw), make_device("b")
    with a.bound():
        note = Note.create(title="base")
    a.sync()
    b.sync()
    for device, title in ((b, "from b"), (a, "from a")):
        with device.bound():
            Note.update(title=title).where(Note.id == note.id).execute()
    b.sync()
    return a


@pytest.mark.parametrize("what", ["sync", "login", "restore"])
@pytest.mark.parametrize("kind", ["subscribe", "on_change", "on_progress", "on_conflict"])
def test_a_listener_calling_back_into_its_device_is_refused(make_device, tmp_path, kind, what):
    callback = CallsBack(what)
    listener = {kind: callback} if kind != "subscribe" else {}
    if kind == "on_conflict":
        a = a_conflict(make_device, **listener, **with_blobs(tmp_path))
    else:
        a = make_device("a", **listener, **with_blobs(tmp_path))
        with a.bound():
            Note.create(title="goes up")
        if kind == "subscribe":
            a.subscribe(callback)
    callback.device = a
    report = finishes(a.sync)
    callback.assert_refused()
    assert report.uploaded.get("note") == 1  # the sync itself went on to its end
    assert a.dirty_counts()["note"] == 0
    callback.device = None
    finishes(a.sync)  # and the device is free afterwards


def test_a_conflict_strategy_calling_sync_is_refused(make_device):
    callback = CallsBack("sync")
    a = a_conflict(make_device, conflict_strategy=callback)
    callback.device = a
    report = finishes(a.sync)
    callback.assert_refused()
    assert [c.outcome for c in report.conflicts] == ["remote"]


def test_progress_of_a_restore_calling_sync_is_refused(make_device, tmp_path):
    first = make_device("first", **with_blobs(tmp_path))
    with first.bound():
        Note.create(title="in the snapshot")
    first.sync()  # publishes the first snapshot
    callback = CallsBack("sync")
    fresh = make_device("fresh", on_progress=callback, **with_blobs(tmp_path))
    callback.device = fresh
    report = finishes(fresh.login)
    callback.assert_refused()
    assert report.restored is not None
    with fresh.bound():
        assert [n.title for n in Note.select()] == ["in the snapshot"]


def test_a_sync_a_listener_schedules_on_another_thread_runs_after(make_device):
    """The pattern the hint names: a listener asks for another sync without waiting for
    it; that sync waits its turn and runs once the first has returned."""
    a = make_device("a")
    with a.bound():
        Note.create(title="first")
    later: list[threading.Thread] = []
    reports = []

    def again(change):
        if not later:
            with a.bound():
                Note.create(title="written by the listener")
            later.append(threading.Thread(target=lambda: reports.append(a.sync())))
            later[0].start()

    a.subscribe(again)
    first = finishes(a.sync)
    later[0].join(DEADLINE)
    assert not later[0].is_alive(), "the scheduled sync never ran"
    assert first.uploaded == {"note": 1}
    assert [r.uploaded for r in reports] == [{"note": 1}]
    assert a.dirty_counts()["note"] == 0


def test_a_sync_from_another_thread_waits_its_turn(make_device, remote):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        Note.create(title="slow")
    running, most = 0, 0
    guard = threading.Lock()

    def slow_push(*args):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with guard:
            running -= 1

    faulty.hooks["push"] = slow_push
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(a.sync())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not any(t.is_alive() for t in threads)
    assert len(reports) == 2  # neither refused
    assert most == 1  # one at a time
    assert sorted(r.uploaded.get("note", 0) for r in reports) == [0, 1]
