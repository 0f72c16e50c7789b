"""Continuous sync: start(interval=…) / stop() in a background thread, syncs soon after
local writes, jittered growing delays after retryable errors, stopped by errors that
retrying cannot mend, stop() at a safe point, close() and the context manager, and
SIGKILL in the middle of it loses nothing."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import peewee
import pytest

from replicator import (
    ConfigurationError,
    EmbeddedRemote,
    Replicator,
    SyncStatus,
)
from tests.helpers import TESTS, WORKERS
from tests.models import MODELS, Comment, Note

ROUNDS = int(os.environ.get("REPLICATOR_CONTINUOUS_KILL_ROUNDS", "6"))


def open_device(place: Path, name: str, remote: Path | None = None, **kw) -> Replicator:
    db = peewee.SqliteDatabase(str(place / f"{name}.db"), pragmas={"foreign_keys": 1}, timeout=30)
    store = EmbeddedRemote(remote or place / "remote" / "remote.db")
    return Replicator(db, MODELS, store, device_name=name, **kw)


@pytest.fixture
def place(tmp_path: Path) -> Path:
    (tmp_path / "remote").mkdir()
    return tmp_path


def wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def rows(rep: Replicator) -> dict[str, tuple]:
    with rep.bound():
        notes = {n.id: (n.title, n.body) for n in Note.select()}
        notes.update({c.id: (c.note_id, c.text) for c in Comment.select()})
    return notes


def test_an_app_writing_while_continuous_sync_runs_converges(place):
    a, b = open_device(place, "a"), open_device(place, "b")
    with a, b:
        a.start(interval=5, after_writes=0.05)  # writes, not the interval, make a sync here
        b.start(interval=0.1)
        assert a.status.running and a.status.activity in ("syncing", "idle")

        def app() -> None:
            with a.bound():
                for i in range(200):
                    note = Note.create(id=f"n{i}", title=f"note {i}")
                    if i % 3 == 0:
                        Comment.create(note=note, text="c")
                    if i % 10 == 0:
                        Note.update(body="edited").where(Note.id == f"n{i // 2}").execute()
                    time.sleep(0.002)

        writer = threading.Thread(target=app)
        writer.start()
        writer.join()
        wait_for(lambda: a.status.pending == 0 and not a.status.syncing)
        wait_for(lambda: len(rows(b)) == len(rows(a)))
        assert a.stop(timeout=10) and b.stop(timeout=10)
        assert not a.status.running and a.status.activity == "stopped"
        assert rows(a) == rows(b) and len(rows(a)) == 200 + 67
        assert a.status.has_synced and a.status.last_error is None


def test_a_sync_follows_local_writes_soon_not_at_the_interval(place):
    a = open_device(place, "a")
    with a:
        a.start(interval=3600, after_writes=0.05)
        wait_for(lambda: a.status.has_synced and not a.status.syncing)
        before = a.status.last_synced_at
        with a.bound():
            note = Note.create(title="x")
        # noticed and synced long before an hour (polling for pending == 1 first could
        # miss it: the sync after 0.05 s may be over before the next look; the row is
        # marked synced a moment before the status says the sync ended)
        wait_for(
            lambda: not a.is_pending(Note, note.id) and a.status.last_synced_at != before,
            timeout=5,
        )


def test_a_burst_of_writes_makes_one_sync_after_it(place):
    a = open_device(place, "a")
    synced: list[object] = []
    with a:
        a.start(interval=3600, after_writes=0.3)
        wait_for(lambda: a.status.has_synced and not a.status.syncing)
        a.on_status(lambda s: synced.append(s.last_synced_at) if not s.syncing else None)
        with a.bound():
            for i in range(40):  # 2 s of writes, 50 ms apart: never 0.3 s of quiet
                Note.create(title=f"burst {i}")
                time.sleep(0.05)
        during = len(set(synced))
        wait_for(lambda: a.status.pending == 0, timeout=10)
        assert during <= 2, during  # a loaded machine may leave one gap of 0.3 s
        assert len(set(synced)) <= during + 1


def test_without_after_writes_only_the_interval_syncs(place):
    a = open_device(place, "a")
    with a:
        a.start(interval=3600)
        wait_for(lambda: a.status.has_synced and not a.status.syncing)
        with a.bound():
            Note.create(title="x")
        wait_for(lambda: a.status.pending == 1, timeout=5)  # counted, not synced
        time.sleep(0.5)
        assert a.status.pending == 1


def test_a_transient_failure_is_retried_with_growing_delays(place):
    a = open_device(place, "a")
    a.sync()
    shutil.move(place / "remote", place / "gone")  # the share goes away: OfflineError
    ends: list[float] = []

    def told(s: SyncStatus) -> None:
        if not s.syncing and s.last_error is not None:
            ends.append(time.monotonic())

    a.on_status(told)
    with a:
        a.start(interval=0.05, backoff=(0.1, 0.8))
        wait_for(lambda: len(ends) >= 6)
        status = a.status
        assert status.running and status.activity in ("failing", "syncing")
        assert status.last_error is not None and status.last_error.kind == "OfflineError"
        gaps = [later - earlier for earlier, later in itertools.pairwise(ends)]
        # doubling, each jittered into the upper half of its ceiling: 0.05-0.1 s, then
        # 0.1-0.2, 0.2-0.4, 0.4-0.8, then at most the longest delay (0.4-0.8)
        floors = [0.05, 0.1, 0.2, 0.4, 0.4]
        assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=False)), gaps
        assert gaps[3] > gaps[0] * 2 and max(gaps) < 1.5, gaps
        shutil.move(place / "gone", place / "remote")  # back: it converges by itself
        with a.bound():
            Note.create(title="written while offline")
        wait_for(lambda: a.status.last_error is None and a.status.pending == 0)
        assert a.status.running


def test_an_error_retrying_cannot_mend_stops_it_and_shows(place):
    a = open_device(place, "a")
    a.remote = EmbeddedRemote(place / "nowhere" / "remote.db", create=False)
    with a:
        a.start(interval=0.05)
        wait_for(lambda: not a.status.running)
        error = a.status.last_error
        assert error is not None and not error.retryable and error.hint
        assert error.kind == "ConfigurationError"
        assert a.status.activity == "stopped"


def test_stop_ends_a_long_sync_at_a_safe_point(place):
    a, b = open_device(place, "a"), open_device(place, "b", page_size=5)
    with a.bound(), a.database.atomic():
        for i in range(400):
            Note.create(id=f"n{i:03}", title="x")
    a.sync()
    pages = threading.Event()
    b.on_status(lambda s: pages.set() if s.phase == "download" and s.fraction else None)
    with a, b:
        b.start(interval=3600)
        assert pages.wait(10)
        started = time.monotonic()
        assert b.stop(timeout=10)
        stopped_after = time.monotonic() - started
        status = b.status
        assert not status.running and not status.syncing
        assert status.last_error is None  # a stop is not an error
        got = len(rows(b))
        assert 0 < got < 400, got  # stopped part-way, what was committed kept
        assert stopped_after < 5
        b.sync()  # the next sync picks up where it stopped
        assert rows(b) == rows(a)


def test_start_is_refused_on_a_private_database_and_with_wrong_settings(place):
    mem = Replicator(peewee.SqliteDatabase(":memory:"), MODELS, EmbeddedRemote(place / "r.db"))
    with pytest.raises(ConfigurationError, match="database file"):
        mem.start()
    a = open_device(place, "a")
    for kw in ({"interval": 0}, {"after_writes": -1}, {"backoff": (0, 1)}, {"backoff": (2, 1)}):
        with pytest.raises(ConfigurationError):
            a.start(**kw)
    assert not a.status.running
    a.close()


def test_start_twice_runs_one_thread_and_stop_from_a_callback_does_not_hang(place):
    a = open_device(place, "a")
    before = threading.active_count()
    stopped: list[bool] = []
    a.on_progress = lambda p: stopped.append(a.stop())  # from inside its own sync
    with a.bound():
        Note.create(title="x")
    a.start(interval=0.05)
    a.start(interval=0.05)
    assert threading.active_count() <= before + 1
    wait_for(lambda: not a.status.running)
    assert stopped and stopped[0] is False  # asked, not waited for
    a.close()


def test_sigkill_during_continuous_sync_loses_nothing(tmp_path):
    """An app writes while continuous sync runs and is killed at random moments, round
    after round; its restart then converges: another device ends with every row the
    app holds, and the app holds every row it said it committed."""
    rng = random.Random(int(os.environ.get("REPLICATOR_CONTINUOUS_KILL_SEED", "0")) or None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    committed: set[str] = set()
    syncs = 0
    for round_ in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, str(WORKERS / "continuous_worker.py"), str(tmp_path), str(round_)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.8, 2.5))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        lines = out.splitlines()
        committed |= {line.split()[1] for line in lines if line.startswith("W ")}
        syncs += sum(line == "S" for line in lines)
    assert len(committed) > ROUNDS * 10 and syncs >= ROUNDS, (len(committed), syncs)
    app = open_device(tmp_path, "app", remote=tmp_path / "remote.db")
    other = open_device(tmp_path, "other", remote=tmp_path / "remote.db")
    with app, other:
        app.start(interval=0.05)
        wait_for(lambda: app.status.has_synced and app.status.pending == 0, timeout=60)
        app.stop()
        other.sync()
        held = rows(app)
        assert committed <= held.keys()
        assert rows(other) == held
