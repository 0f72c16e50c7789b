"""One deadline per request, a bounded read of every answer, and a slow type that
holds up nothing else: against real receivers on 127.0.0.1 that trickle their
answer or answer far too much."""

from __future__ import annotations

import time
import tracemalloc

import httpx
import pytest

from replicator import DeliveryRejected, Outbox, TransientError
from replicator.outbox import Retry
from replicator.stores.base import Delivery
from replicator.stores.deadline import DeadlineTransport
from replicator.stores.http import KEPT_RESPONSE, HttpSink
from replicator.testing import EventReceiver


def api(url: str) -> dict:
    return {"method": "post", "host": url, "path": "events", "params": ""}


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


def one(msg_id: str = "m1") -> Delivery:
    return Delivery(msg_id, "T", b'{"a": 1}', False, 1, "k")


def test_a_trickled_answer_ends_at_the_deadline(receiver):
    sink = HttpSink("POST", receiver.url, timeout=1.0)
    receiver.trickle(0.1)  # a byte every 0.1 s: each read well within any read timeout
    start = time.monotonic()
    with pytest.raises(TransientError):
        sink.deliver(one())
    took = time.monotonic() - start
    assert took < 2.5, took
    sink.deliver(one("m2"))  # the sink goes on
    assert [m["msg_id"] for m in receiver.messages] == ["m2"]
    sink.close()


def test_an_apps_client_keeps_the_deadline_with_the_deadline_transport(receiver):
    client = httpx.Client(transport=DeadlineTransport(), headers={"Authorization": "Bearer t"})
    sink = HttpSink("POST", receiver.url, client=client, timeout=1.0)
    receiver.trickle(0.1)
    start = time.monotonic()
    with pytest.raises(TransientError):
        sink.deliver(one())
    assert time.monotonic() - start < 2.5
    sink.close()
    client.close()


@pytest.mark.parametrize("status", [200, 400])
def test_a_huge_answer_is_not_read_whole(receiver, status):
    sink = HttpSink("POST", receiver.url, timeout=10)
    receiver.big(64 << 20, status=status)
    tracemalloc.start()
    try:
        if status == 200:
            sink.deliver(one())
        else:
            with pytest.raises(DeliveryRejected) as info:
                sink.deliver(one())
            assert len(info.value.response) == KEPT_RESPONSE
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"reading the answer took {peak:,} bytes"
    sink.close()


def test_a_trickling_type_holds_up_neither_the_other_types_nor_a_scheduled_job(tmp_path):
    with EventReceiver() as slow, EventReceiver() as quick:
        slow.trickle(0.2, times=100)  # every answer of this one takes ~15 s
        box = Outbox(tmp_path / "events.db", timeout=3, retry=Retry(attempts=1, base=5, cap=5))
        box.init(
            [
                {"type": "SLOW", "api": api(slow.url), "autoSync": {"threshold": 1}},
                {"type": "QUICK", "api": api(quick.url), "autoSync": {"threshold": 1}},
            ]
        )
        runs: list[float] = []
        box.schedule(lambda: runs.append(time.monotonic()), every=0.005, name="sync")  # 0.3 s
        box.save("SLOW", {"n": 0}, priority=9)  # goes first, and trickles
        box.start()
        assert wait_for(lambda: slow.requests >= 1)
        start = time.monotonic()
        for n in range(5):
            box.save("QUICK", {"n": n})
        assert wait_for(lambda: len(quick.events) == 5, timeout=2.5)
        assert wait_for(lambda: len(runs) >= 3, timeout=2.5)  # the job keeps its interval
        took = time.monotonic() - start
        assert box.status()["SLOW"].last_error is None  # all while SLOW's request hangs
        # the slow type's request ends at its deadline, is recorded and backed off
        assert wait_for(lambda: box.status()["SLOW"].last_error is not None, timeout=5)
        status = box.status()["SLOW"]
        box.close(timeout=0)
    assert took < 2.5, took
    assert status.pending_events == 1 and "TransientError" in status.last_error


def test_close_waits_for_a_lane_in_flight_then_leaves_it(tmp_path):
    with EventReceiver() as slow:
        slow.trickle(0.2, times=10)
        box = Outbox(tmp_path / "events.db", timeout=30)
        box.init([{"type": "T", "api": api(slow.url), "autoSync": {"threshold": 1}}])
        box.save("T", {"n": 0})
        box.start()
        assert wait_for(lambda: slow.requests >= 1)
        start = time.monotonic()
        box.close(timeout=0.2)
        took = time.monotonic() - start
    assert took < 3.0, took  # the timeout and one second for the request in flight
    again = Outbox(tmp_path / "events.db")
    assert again.status()["T"].pending_events == 1  # nothing lost on the way out
    again.close()
