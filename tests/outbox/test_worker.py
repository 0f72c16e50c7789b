"""The outbox's background worker: automatic syncs per autoSync, one sync per type
at a time, bounded close, pick-up after a restart, and scheduled Replicator syncs."""

from __future__ import annotations

import json
import os
import threading
import time

import peewee
import pytest

from replicator import EmbeddedRemote, OfflineError, Outbox, Replicator
from replicator.outbox import Retry
from replicator.testing import SEED_CONFIGS, EventReceiver
from tests.models import Comment, Note

FAST = Retry(attempts=2, base=0.02, cap=1.0)


def configs(url: str, **auto: object) -> dict:
    raw = json.loads(SEED_CONFIGS)
    for config in raw.values():
        config["api"]["host"] = url
    raw["TELEMETRY"]["autoSync"] = auto or None
    raw["AUDIT"] = {
        "api": {"method": "post", "host": url, "path": "audit", "params": ""},
        "autoSync": auto or None,
        "shouldBatch": True,
    }
    return raw


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def receiver():
    with EventReceiver() as r:
        yield r


def test_the_threshold_starts_a_sync(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url, threshold=5))
    box.start()
    for i in range(4):
        box.save("TELEMETRY", {"i": i})
    time.sleep(0.4)
    assert receiver.events == []  # below the threshold, no frequency: nothing yet
    box.save("TELEMETRY", {"i": 4})
    assert wait_for(lambda: len(receiver.events) == 5)
    box.close()


def test_the_frequency_syncs_what_waits(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url, frequency=0.005))  # 0.3 s
    box.start()
    box.save("TELEMETRY", {"i": 1})
    assert wait_for(lambda: len(receiver.events) == 1)
    box.save("TELEMETRY", {"i": 2})
    assert wait_for(lambda: len(receiver.events) == 2)
    box.close()


def test_types_without_autosync_wait_for_sync_or_a_request(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url, frequency=0.001))
    box.start()
    box.save("COURSE_PROGRESS", {"p": 1})
    time.sleep(0.4)
    assert receiver.events == []
    # a requested sync runs on the worker and is retried until it succeeds
    receiver.fail(503, times=2)
    box.request_sync("COURSE_PROGRESS")
    assert wait_for(lambda: len(receiver.events) == 1)
    assert receiver.refused == [503, 503]
    box.close()


def test_a_restart_picks_up_where_it_stopped(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url, frequency=60))
    keys = [box.save("TELEMETRY", {"i": i}) for i in range(20)]
    box.close()  # the worker never ran
    again = Outbox(tmp_path / "events.db", retry=FAST)
    again.start()  # no init: the stored configurations serve
    assert wait_for(lambda: len(receiver.events) == 20)
    assert sorted(receiver.event_keys()) == sorted(keys)
    again.close()


def test_an_explicit_sync_during_an_automatic_one_sends_nothing_twice(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST, batch_events=10)
    box.init(configs(receiver.url, threshold=1))
    receiver.slow(0.3, times=3)
    keys = [box.save("TELEMETRY", {"i": i}) for i in range(50)]
    box.start()
    assert wait_for(lambda: receiver.requests >= 1)
    box.sync("TELEMETRY")  # waits for the worker's turn, then sends what is left
    assert wait_for(lambda: len(receiver.events) == 50)
    time.sleep(0.3)
    assert sorted(receiver.event_keys()) == sorted(keys)
    assert receiver.duplicates == 0
    box.close()


def test_priority_orders_types_due_together(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url, threshold=1))
    box.save("TELEMETRY", {"t": 1}, priority=0)
    box.save("AUDIT", {"a": 1}, priority=9)
    box.start()
    assert wait_for(lambda: len(receiver.messages) == 2)
    assert [m["type"] for m in receiver.messages] == ["AUDIT", "TELEMETRY"]
    box.close()


def test_close_is_bounded_and_keeps_what_it_could_not_send(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST, batch_events=1, timeout=5)
    box.init(configs(receiver.url, frequency=60))
    receiver.slow(1.0, times=20)
    for i in range(10):
        box.save("TELEMETRY", {"i": i})
    box.start()
    assert wait_for(lambda: receiver.requests >= 1)
    start = time.monotonic()
    box.close(timeout=0.5)
    took = time.monotonic() - start
    assert took < 4.0  # the timeout, plus at most one request in flight
    time.sleep(1.2)
    again = Outbox(tmp_path / "events.db")
    left = again.status()["TELEMETRY"].pending_events
    again.close()
    assert left >= 5
    assert left + len(receiver.events) == 10  # nothing lost on the way out


def test_bandwidth_caps_automatic_syncs_only(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST, batch_events=1)
    box.init(configs(receiver.url, threshold=1, bandwidth=32))  # 32 KiB/s
    noise = [os.urandom(12 * 1024).hex()[: 16 * 1024] for _ in range(5)]  # does not compress
    for text in noise:
        box.save("AUDIT", {"blob": text})
    start = time.monotonic()
    box.start()
    assert wait_for(lambda: len(receiver.events) == 5)
    automatic = time.monotonic() - start
    box.close()
    # 5 messages of ~8 KiB gzipped at 32 KiB/s: about 1.25 s of pacing
    assert automatic >= 0.9
    explicit = Outbox(tmp_path / "explicit.db", retry=FAST, batch_events=1)
    explicit.init(configs(receiver.url, threshold=10**6, bandwidth=1))  # 1 KiB/s: would take 60 s
    for text in noise:
        explicit.save("AUDIT", {"blob": text})
    start = time.monotonic()
    assert explicit.sync("AUDIT").events_sent == 5
    assert time.monotonic() - start < 30  # not paced
    explicit.close()


def test_a_scheduled_job_backs_off_on_retryable_failures(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url))
    calls: list[float] = []

    def flaky() -> None:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise OfflineError("no network yet")

    box.schedule(flaky, every=10, name="flaky")  # every 10 minutes: retries come sooner
    box.start()
    assert wait_for(lambda: len(calls) == 3)
    job = box._worker.jobs[0]
    assert job.last_success is not None and job.failures == 0
    assert job.next_run - time.time() > 500  # back on its interval
    box.close()


def test_the_worker_runs_a_replicator_sync_on_its_interval(tmp_path, receiver):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    devices = []
    for name in ("a", "b"):
        db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
        devices.append(Replicator(db, [Note, Comment], remote, device_name=name))
    a, b = devices
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(configs(receiver.url))
    box.schedule(a.sync, every=0.002, name="replicator a")  # 0.12 s
    with a.bound():
        note = Note.create(title="written on a")
    box.start()

    def arrived() -> bool:
        b.sync()
        with b.bound():
            return Note.select().where(Note.id == note.id).exists()

    assert wait_for(arrived)
    box.close()
    for device in devices:
        device.database.close()


def test_saves_from_threads_while_the_worker_runs_arrive_exactly_once(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST, batch_events=25)
    box.init(configs(receiver.url, threshold=10, frequency=0.002))
    box.start()
    keys: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(150):
            key = box.save("TELEMETRY", {"w": n, "i": i})
            with lock:
                keys.append(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_for(lambda: len(receiver.events) == 600)
    box.close()
    assert sorted(receiver.event_keys()) == sorted(keys)
    assert receiver.duplicates == 0
