"""A message that cannot go never holds back its type, and no failure goes
unrecorded or makes the worker spin: headers any key or type can hold, failures
of every kind recorded and backed off, faults dead-lettered after
``Retry.attempts``, a message that keeps failing sent after the others."""

from __future__ import annotations

import time

import pytest

from replicator import (
    ConfigurationError,
    DeliveryRejected,
    Outbox,
    RemoteError,
    ReplicatorError,
    TransientError,
)
from replicator.outbox import Retry
from replicator.stores.base import Delivery
from replicator.stores.http import HttpSink, header_text, header_value
from replicator.testing import EventReceiver


def api(url: str, path: str = "events") -> dict:
    return {"method": "post", "host": url, "path": path, "params": ""}


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Picky:
    """An app's sink that fails on the events whose data names a failure, with that
    failure, and takes the others."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.taken: list[dict] = []

    def deliver(self, delivery: Delivery) -> None:
        import json

        data = json.loads(delivery.body)
        self.calls.append(data.get("fail", ""))
        failure = FAILURES.get(data.get("fail", ""))
        if failure is not None:
            raise failure()
        self.taken.append(data)

    def close(self) -> None:
        pass


FAILURES = {
    "bug": lambda: ValueError("the sink has a bug"),
    "unencodable": lambda: UnicodeEncodeError("ascii", "José", 3, 4, "not ASCII"),
    "nonsense": lambda: RemoteError("the receiver answered nonsense"),
    "config": lambda: ConfigurationError("the sink is misconfigured"),
    "busy": lambda: TransientError("the receiver is busy"),
}


@pytest.fixture
def receiver():
    with EventReceiver() as r:
        yield r


# -- headers -----------------------------------------------------------------------------


def test_a_type_or_key_no_header_can_hold_is_sent_encoded_and_read_back(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=1))
    box.init(
        [
            {"type": "TÉLÉMÉTRIE", "api": api(receiver.url), "shouldBatch": True},
            {"type": "PROGRESS", "api": api(receiver.url), "shouldBatch": False},
        ]
    )
    keys = ["learner-José", "a\r\nX-Injected: 1", " padded ", "UTF-8''as typed", "tab\there"]
    keys.append("learner-7/course-3 (plain ASCII, 100% as is)")
    for n, key in enumerate(keys):
        box.save("PROGRESS", {"n": n}, key=key)
    box.save("TÉLÉMÉTRIE", {"é": "ü"}, key="ключ")
    assert box.sync("PROGRESS").events_sent == len(keys)
    assert box.sync("TÉLÉMÉTRIE").events_sent == 1
    status = box.status()
    box.close()
    assert [e["key"] for e in receiver.events if e["type"] == "PROGRESS"] == keys
    [batch] = [e for e in receiver.events if e["type"] == "TÉLÉMÉTRIE"]
    assert batch["key"] == "ключ" and batch["data"] == {"é": "ü"}
    assert all(s.last_error is None for s in status.values())


def test_header_values_keep_plain_ascii_and_encode_the_rest():
    for plain in ("learner-7/course-3", "TELEMETRY", "a b", "50%off", "x=1;y=2"):
        assert header_value(plain) == plain
    for text, sent in (
        ("learner-José", "UTF-8''learner-Jos%C3%A9"),
        ("TÉLÉMÉTRIE", "UTF-8''T%C3%89L%C3%89M%C3%89TRIE"),
        ("a\r\nb", "UTF-8''a%0D%0Ab"),
        (" x", "UTF-8''%20x"),
        ("UTF-8''x", "UTF-8''UTF-8%27%27x"),
    ):
        assert header_value(text) == sent
        assert header_text(sent) == text
    for text in ("", "é" * 3, "\x00\x7f", "😀 emoji"):
        value = header_value(text)
        assert value.isascii() and value.isprintable() and header_text(value) == text


# -- failures of every kind ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bug", "unencodable", "nonsense", "config", "busy"])
def test_a_failure_of_any_kind_is_recorded_and_backed_off(tmp_path, kind):
    # one attempt of a busy one per sync (no retries slept); a fault is kept 5 times
    attempts = 1 if kind == "busy" else 5
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=attempts, base=30, cap=60))
    sink = Picky()
    box.init([{"type": "T", "api": api("http://127.0.0.1:9")}], sinks={"T": sink})
    box.save("T", {"fail": kind})
    with pytest.raises(ReplicatorError):
        box.sync("T")
    status = box.status()["T"]
    assert status.last_error and status.pending_events == 1
    assert status.next_attempt is not None and status.next_attempt > time.time() + 10
    box.close()


def test_the_worker_does_not_spin_on_a_sink_that_always_fails(tmp_path):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=10_000, base=0.05, cap=1.0))
    sink = Picky()
    box.init(
        [{"type": "T", "api": api("http://127.0.0.1:9"), "autoSync": {"threshold": 1}}],
        sinks={"T": sink},
    )
    for kind in ("bug", "nonsense", "unencodable"):
        box.save("T", {"fail": kind})
    box.start()
    time.sleep(1.5)
    calls = len(sink.calls)
    box.close(timeout=0)
    assert 3 <= calls <= 60, calls  # a few runs of backoff, not thousands of calls


def test_a_faulty_message_is_set_aside_then_dead_lettered_and_the_rest_goes(tmp_path):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=3, base=0.02, cap=0.1))
    sink = Picky()
    box.init(
        [{"type": "T", "api": api("http://127.0.0.1:9"), "autoSync": {"threshold": 1}}],
        sinks={"T": sink},
    )
    box.save("T", {"fail": "bug", "n": 0}, priority=9)  # first in line
    for n in range(1, 6):
        box.save("T", {"n": n})
    box.start()
    assert wait_for(lambda: len(box.dead_letters("T")) == 1)
    assert wait_for(lambda: len(sink.taken) == 5)
    [letter] = box.dead_letters("T")
    assert box.status()["T"].pending_events == 0
    box.close()
    assert [d["n"] for d in sink.taken] == [1, 2, 3, 4, 5]
    assert sink.calls.count("bug") == 3
    assert letter.status == 0 and "ValueError" in letter.response and "bug" in letter.response


def test_a_message_the_receiver_keeps_refusing_for_now_goes_after_the_others(tmp_path):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=1, base=0.01, cap=0.05))
    sink = Picky()
    box.init([{"type": "T", "api": api("http://127.0.0.1:9")}], sinks={"T": sink})
    box.save("T", {"fail": "busy"}, priority=9)
    with pytest.raises(TransientError):
        box.sync("T")  # the busy one was first in line
    for n in range(3):
        box.save("T", {"n": n})
    with pytest.raises(TransientError):
        box.sync("T")  # the others went first this time; the busy one failed again
    assert [d["n"] for d in sink.taken] == [0, 1, 2]
    assert sink.calls == ["busy", "", "", "", "busy"]
    assert box.status()["T"].pending_events == 1  # kept: it can pass
    assert box.dead_letters() == []
    box.close()


def test_a_later_message_of_a_key_never_overtakes_one_that_failed(tmp_path):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=5, base=0.01, cap=0.05))
    sink = Picky()
    box.init([{"type": "T", "api": api("http://127.0.0.1:9")}], sinks={"T": sink})
    box.save("T", {"fail": "bug", "v": 1}, key="learner-7")
    with pytest.raises(RemoteError):
        box.sync("T")
    box.save("T", {"v": 2}, key="learner-7")  # a new message of the key: waits its turn
    box.save("T", {"v": 3}, key="learner-8")  # another key: goes
    with pytest.raises(RemoteError):
        box.sync("T")
    assert sink.taken == [{"v": 3}]
    box.close()


def test_an_http_refusal_goes_on_to_the_next_message(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db")
    box.init([{"type": "T", "api": api(receiver.url)}])
    for n in range(3):
        box.save("T", {"n": n})
    receiver.fail(401)
    assert box.sync("T").dead_lettered == 1
    assert [e["data"]["n"] for e in receiver.events] == [1, 2]
    box.close()


def test_an_http_sink_refusing_the_sender_is_delivery_rejected(receiver):
    sink = HttpSink("POST", receiver.url, timeout=5)
    receiver.fail(403)
    with pytest.raises(DeliveryRejected) as info:
        sink.deliver(Delivery("m1", "T", b"{}", False, 1, "k"))
    assert info.value.status == 403
    sink.close()


def test_a_message_that_found_no_receiver_goes_once_the_backoff_ends(tmp_path):
    with EventReceiver() as gone:
        url, port = gone.url, gone.server.server_address[1]
    box = Outbox(tmp_path / "events.db", timeout=10, retry=Retry(attempts=1, base=0.2, cap=0.4))
    box.init([{"type": "T", "api": api(url), "autoSync": {"threshold": 1}}])
    box.save("T", {"n": 0})
    box.start()
    assert wait_for(lambda: "OfflineError" in (box.status()["T"].last_error or ""))
    with EventReceiver(port=port) as back:
        # well before the 20 s a claim of the message taken would last
        assert wait_for(lambda: len(back.events) == 1, timeout=5)
        box.close()
