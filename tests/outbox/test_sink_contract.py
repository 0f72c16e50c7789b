"""The ``Sink`` contract (``replicator/stores/base.py``), checked against every real
implementation with the same tests.

What the protocol and its ``Delivery`` promise:

* ``deliver`` returns once the receiver acknowledged the message: a batch (gzipped
  JSON) or one event (plain JSON, with its key) is then held by the receiver;
* ``msg_id`` is the same on every attempt, so a receiver that drops a ``msg_id``
  it has seen holds a message sent twice once;
* an unreachable receiver is an ``OfflineError`` and a busy one a
  ``TransientError`` (with ``retry_after`` when the receiver named a delay): both
  retryable, and sending the same message again later succeeds;
* a message the receiver refuses for good is a ``DeliveryRejected`` (not
  retryable), naming the message and the status;
* ``close`` ends the sink.

Each implementation runs against a real receiver: ``HttpSink`` against the
``EventReceiver`` HTTP server on 127.0.0.1; ``BundleSink`` against a real
``Ingestor`` behind its HTTP endpoint, with the message bytes in a
``DirectoryBlobStore`` or in S3 (moto's server).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from replicator import (
    BundleSink,
    DeliveryRejected,
    DeviceTokens,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    OfflineError,
    Outbox,
    TransientError,
)
from replicator.stores.base import BlobStore, Delivery, Sink
from replicator.stores.http import HttpSink
from replicator.testing import EventReceiver

BATCHED, SINGLE = "TELEMETRY", "COURSE_PROGRESS"

Received = list[tuple[Any, Any]]


def batch(events: list[tuple[str, Any]], msg_id: str | None = None) -> Delivery:
    """A batch as the outbox builds it: gzipped ``{msg_id, type, events}``."""
    msg_id = msg_id or uuid.uuid4().hex
    body = {
        "msg_id": msg_id,
        "type": BATCHED,
        "events": [
            {"key": key, "timestamp": 1.5 + n, "priority": 0, "data": data}
            for n, (key, data) in enumerate(events)
        ],
    }
    return Delivery(msg_id, BATCHED, gzip.compress(json.dumps(body).encode()), True, len(events))


def single(key: str, data: Any) -> Delivery:
    """One event as the outbox sends it: its own JSON, plain, with its key."""
    return Delivery(uuid.uuid4().hex, SINGLE, json.dumps(data).encode(), False, 1, key)


def ordered(events: Received) -> Received:
    return sorted(events, key=lambda e: (str(e[0]), json.dumps(e[1], sort_keys=True)))


class Receiving(Protocol):
    """A sink and the real receiver behind it, which a test can make unreachable or
    busy for a while."""

    sink: Sink

    def received(self, type_: str) -> Received:
        """(key, data) of every event of ``type_`` the receiver holds."""
        ...

    def unreachable(self) -> contextlib.AbstractContextManager[None]:
        """Inside the block the receiver cannot be reached; after it, it can again."""
        ...

    def busy(self) -> contextlib.AbstractContextManager[float | None]:
        """Inside the block the receiver answers "later"; yields the delay it names."""
        ...

    def refusing_the_sender(self) -> contextlib.AbstractContextManager[None]:
        """Inside the block the receiver refuses the sender itself (a credential it
        lacks), whatever the message."""
        ...

    def close(self) -> None: ...


class HttpReceiving:
    """``HttpSink`` to a real ``EventReceiver`` (which drops a ``msg_id`` it has seen)."""

    def __init__(self) -> None:
        self.receivers = [EventReceiver().start()]
        self.sink = HttpSink("POST", f"{self.receivers[0].url}/events", timeout=5)

    def received(self, type_: str) -> Received:
        return ordered(
            [(e["key"], e["data"]) for r in self.receivers for e in r.events if e["type"] == type_]
        )

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[None]:
        port = self.receivers[-1].server.server_address[1]
        self.receivers[-1].stop()  # drops the kept-alive connections too
        try:
            yield
        finally:
            self.receivers.append(EventReceiver(port=port).start())

    @contextlib.contextmanager
    def busy(self) -> Iterator[float | None]:
        self.receivers[-1].fail(503, retry_after=7)
        yield 7.0

    @contextlib.contextmanager
    def refusing_the_sender(self) -> Iterator[None]:
        self.receivers[-1].fail(401)
        yield

    def close(self) -> None:
        self.sink.close()
        self.receivers[-1].stop()


class BundleReceiving:
    """``BundleSink`` putting messages in ``blobs`` and announcing them over HTTP to
    a real ``Ingestor``, which keeps the events in an embedded remote store."""

    def __init__(self, blobs: BlobStore, tmp_path: Path) -> None:
        self.remote_path = tmp_path / "remote.db"
        self.remote = EmbeddedRemote(self.remote_path)
        # a short lock timeout: a remote held by another writer makes the service busy
        self.ingestor = Ingestor(blobs, EmbeddedRemote(self.remote_path, timeout=0.3), [])
        self.server = self.ingestor.serve()
        # no kept-alive connections: a closed endpoint is unreachable at once
        self.client = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))
        service = HttpIngest(self.server.url, client=self.client)
        self.sink = BundleSink(blobs, service, device="contract")

    def received(self, type_: str) -> Received:
        docs = self.remote.all_docs(f"outbox_{type_.lower()}").values()
        return ordered([(d.data["key"], json.loads(d.data["data"])) for d in docs])

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[None]:
        port = self.server.port
        self.server.close()
        try:
            yield
        finally:
            self.server = self.ingestor.serve(port=port)

    @contextlib.contextmanager
    def busy(self) -> Iterator[float | None]:
        lock = sqlite3.connect(self.remote_path, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the service's store
        try:
            yield None  # the service answers 503 without naming a delay
        finally:
            lock.execute("ROLLBACK")
            lock.close()

    @contextlib.contextmanager
    def refusing_the_sender(self) -> Iterator[None]:
        port = self.server.port
        self.server.close()
        # the service knows only another device's token: this sink's requests are refused
        tokens = DeviceTokens({"another-device": "a token this sink does not hold"})
        self.server = self.ingestor.serve(port=port, auth=tokens)
        try:
            yield
        finally:
            self.server.close()
            self.server = self.ingestor.serve(port=port)

    def close(self) -> None:
        self.sink.close()
        self.client.close()
        self.server.close()


@pytest.fixture(params=["http", "bundle-directory", "bundle-s3"])
def receiving(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiving]:
    harness: Receiving
    if request.param == "http":
        harness = HttpReceiving()
    elif request.param == "bundle-directory":
        harness = BundleReceiving(DirectoryBlobStore(tmp_path / "bucket"), tmp_path)
    else:
        harness = BundleReceiving(request.getfixturevalue("s3_blobs"), tmp_path)
    yield harness
    harness.close()


EVENTS = [("k0", {"eid": "INTERACT", "n": 0}), ("k1", {"eid": "START", "n": 1}), ("k2", [1, 2])]


def test_is_a_sink(receiving):
    assert isinstance(receiving.sink, Sink)


def test_a_batch_is_held_by_the_receiver_once_deliver_returns(receiving):
    assert receiving.sink.deliver(batch(EVENTS)) is None
    assert receiving.received(BATCHED) == ordered(EVENTS)


def test_a_single_event_is_held_with_its_key(receiving):
    receiving.sink.deliver(single("learner-7/course-3", {"do_1": 2, "do_2": 1}))
    assert receiving.received(SINGLE) == [("learner-7/course-3", {"do_1": 2, "do_2": 1})]


def test_a_message_sent_again_under_its_msg_id_is_held_once(receiving):
    message, one = batch(EVENTS), single("learner-7", {"do_1": 1})
    for _ in range(2):  # a retry after a lost answer sends the same Delivery again
        receiving.sink.deliver(message)
        receiving.sink.deliver(one)
    assert receiving.received(BATCHED) == ordered(EVENTS)
    assert receiving.received(SINGLE) == [("learner-7", {"do_1": 1})]


def test_an_unreachable_receiver_is_an_offline_error_and_a_later_attempt_succeeds(receiving):
    message = batch(EVENTS)
    with receiving.unreachable(), pytest.raises(OfflineError) as info:
        receiving.sink.deliver(message)
    assert info.value.retryable
    assert receiving.received(BATCHED) == []
    receiving.sink.deliver(message)
    assert receiving.received(BATCHED) == ordered(EVENTS)


def test_a_busy_receiver_is_a_transient_error_with_the_delay_it_named(receiving):
    message = batch(EVENTS)
    with receiving.busy() as named, pytest.raises(TransientError) as info:
        receiving.sink.deliver(message)
    assert info.value.retryable
    assert info.value.retry_after == named
    assert receiving.received(BATCHED) == []
    receiving.sink.deliver(message)
    assert receiving.received(BATCHED) == ordered(EVENTS)


def test_a_refused_message_is_delivery_rejected_and_the_sink_goes_on(receiving):
    msg_id = uuid.uuid4().hex
    unreadable = Delivery(msg_id, BATCHED, gzip.compress(b'{"msg_id": "not json'), True, 1)
    with pytest.raises(DeliveryRejected) as info:
        receiving.sink.deliver(unreadable)
    assert not info.value.retryable
    assert 400 <= info.value.status < 500 and info.value.status not in (408, 429)
    assert info.value.msg_id == msg_id and info.value.response
    assert receiving.received(BATCHED) == []
    receiving.sink.deliver(batch(EVENTS))  # the next message is not affected
    assert receiving.received(BATCHED) == ordered(EVENTS)


def test_a_receiver_refusing_the_sender_is_delivery_rejected(receiving):
    """No later attempt can succeed while the receiver refuses the sender itself (a
    wrong or missing credential): the protocol's "DeliveryRejected when it cannot"."""
    with receiving.refusing_the_sender(), pytest.raises(DeliveryRejected) as info:
        receiving.sink.deliver(batch(EVENTS))
    assert info.value.status == 401
    assert receiving.received(BATCHED) == []


def test_close_ends_the_sink_after_use(receiving):
    receiving.sink.deliver(batch(EVENTS))
    assert receiving.sink.close() is None


def test_an_outbox_delivers_through_the_sink_exactly_once(receiving, tmp_path):
    api = {"method": "post", "host": "http://127.0.0.1:9", "path": "", "params": ""}
    box = Outbox(tmp_path / "events.db", batch_events=4)
    box.init(
        [
            {"type": BATCHED, "api": api, "autoSync": None, "shouldBatch": True},
            {"type": SINGLE, "api": api, "autoSync": None, "shouldBatch": False},
        ],
        sinks={BATCHED: receiving.sink, SINGLE: receiving.sink},
    )
    saved = [(box.save(BATCHED, {"n": n}), {"n": n}) for n in range(10)]
    box.save(SINGLE, {"do_1": 2}, key="learner-7")
    assert box.sync(BATCHED).messages_sent == 3
    assert box.sync(SINGLE).events_sent == 1
    box.close()  # an app's sink stays open: the app closes it
    assert receiving.received(BATCHED) == ordered(saved)
    assert receiving.received(SINGLE) == [("learner-7", {"do_1": 2})]
