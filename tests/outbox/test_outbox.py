"""The event outbox against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import threading
import time

import pytest

from replicator import (
    ConfigurationError,
    EventError,
    LocalDatabaseError,
    OfflineError,
    Outbox,
    TransientError,
)
from replicator.outbox import Retry, SyncConfiguration, load_configurations, per_key_max
from replicator.stores.base import Delivery
from replicator.stores.http import HttpSink, retry_after
from replicator.testing import SEED_CONFIGS, SEED_EVENTS, EventReceiver

FAST = Retry(attempts=3, base=0.01, cap=2.0)


def seed_configs(url: str, **auto: object) -> dict:
    """The seed's three configurations as written, pointed at ``url``."""
    raw = json.loads(SEED_CONFIGS)
    for config in raw.values():
        config["api"]["host"] = url
    if auto:
        raw["TELEMETRY"]["autoSync"] = auto
    else:
        raw["TELEMETRY"]["autoSync"] = None
    return raw


@pytest.fixture
def receiver():
    with EventReceiver() as r:
        yield r


@pytest.fixture
def outbox(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST, timeout=5)
    box.init(seed_configs(receiver.url))
    yield box
    box.close()


def telemetry(i: int) -> dict:
    event = json.loads(SEED_EVENTS["TELEMETRY"])
    event["mid"] = f"mid-{i}"
    return event


def table_counts(path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        waiting = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        in_messages = conn.execute(
            "SELECT COALESCE(SUM(event_count), 0) FROM processed_sync_data"
        ).fetchone()[0]
        return waiting, in_messages
    finally:
        conn.close()


# -- configuration --------------------------------------------------------------------


def test_the_seed_configurations_load_as_written():
    configs = load_configurations(json.loads(SEED_CONFIGS))
    assert set(configs) == {"TELEMETRY", "COURSE_PROGRESS", "COURSE_ASSESSMENT"}
    telemetry_config = configs["TELEMETRY"]
    assert telemetry_config.api.method == "POST"
    assert telemetry_config.should_batch is True
    assert telemetry_config.auto_sync is not None
    assert (telemetry_config.auto_sync.frequency, telemetry_config.auto_sync.threshold) == (2, 200)
    assert telemetry_config.auto_sync.bandwidth == 200
    assert configs["COURSE_PROGRESS"].api.method == "PATCH"
    assert configs["COURSE_PROGRESS"].auto_sync is None
    # a bare host name means https; params are the query
    assert configs["COURSE_PROGRESS"].api.url == "https://sample_host/sample_path?sample_params"
    # the list form, with methods in upper case, gives the same configurations
    upper = SEED_CONFIGS.replace('"post"', '"POST"').replace('"patch"', '"Patch"')
    as_list = [{"type": t, **c} for t, c in json.loads(upper).items()]
    assert {c.type for c in load_configurations(as_list).values()} == set(configs)
    # and a configuration survives its own round trip
    again = SyncConfiguration.from_dict(telemetry_config.to_dict())
    assert again == telemetry_config


def test_a_host_with_scheme_and_port_is_kept():
    config = SyncConfiguration.from_dict(
        {
            "type": "T",
            "api": {
                "method": "put",
                "host": "http://127.0.0.1:8080/",
                "path": "/a/b",
                "params": "",
            },
            "shouldBatch": True,
        }
    )
    assert config.api.url == "http://127.0.0.1:8080/a/b"
    assert config.api.method == "PUT"


BAD_CONFIGS = [
    ("api", None),
    ("api", "x"),
    ("api.method", "GET"),
    ("api.method", 3),
    ("api.host", ""),
    ("api.host", None),
    ("api.host", "ftp://files.example"),
    ("api.host", "http://127.0.0.1:99999"),
    ("api.host", "http://"),
    ("api.host", "bad host"),
    ("api.path", 7),
    ("api.params", 1.5),
    ("api.extra", "x"),
    ("autoSync", "often"),
    ("autoSync.frequency", -1),
    ("autoSync.frequency", "2"),
    ("autoSync.threshold", float("nan")),
    ("autoSync.bandwidth", float("inf")),
    ("autoSync.bandwidth", True),
    ("autoSync.sometimes", 1),
    ("shouldBatch", "yes"),
    ("type", ""),
    ("type", 5),
    ("typo", 1),
]


@pytest.mark.parametrize(("field", "value"), BAD_CONFIGS)
def test_a_wrong_configuration_field_is_named(field, value, tmp_path):
    raw = {
        "type": "TELEMETRY",
        "api": {"method": "post", "host": "h", "path": "p", "params": ""},
        "autoSync": {"frequency": 2, "threshold": 200, "bandwidth": 200},
        "shouldBatch": True,
    }
    *parents, last = field.split(".")
    target = raw
    for name in parents:
        target = target[name]
    target[last] = value
    box = Outbox(tmp_path / "events.db")
    try:
        with pytest.raises(ConfigurationError) as info:
            box.init([raw])
        assert field.split(".")[-1] in str(info.value) or "unknown key" in str(info.value)
        assert box.configurations == {}  # nothing half-applied
    finally:
        box.close()


def test_a_type_that_is_not_valid_unicode_is_refused(tmp_path):
    box = Outbox(tmp_path / "events.db")
    api = {"method": "post", "host": "h", "path": "", "params": ""}
    with pytest.raises(ConfigurationError, match="surrogate"):
        box.init([{"type": "T\udc80", "api": api}])
    box.init([{"type": "TÉLÉMÉTRIE", "api": api}])  # any other string is a type
    box.close()


def test_a_type_configured_twice_is_refused():
    raw = json.loads(SEED_CONFIGS)["TELEMETRY"]
    with pytest.raises(ConfigurationError, match="twice"):
        load_configurations([{"type": "A", **raw}, {"type": "A", **raw}])


# -- the file -------------------------------------------------------------------------


def test_the_file_holds_the_seeds_two_tables(outbox):
    conn = sqlite3.connect(outbox.path)
    columns = {
        table: [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        for table in ("events", "processed_sync_data")
    }
    conn.close()
    assert columns["events"] == ["_id", "type", "key", "data", "timestamp", "priority"]
    assert columns["processed_sync_data"][:6] == [
        "_id",
        "msg_id",
        "type",
        "processed_data",
        "event_count",
        "priority",
    ]


def test_the_apps_database_is_refused(tmp_path):
    app = tmp_path / "app.db"
    conn = sqlite3.connect(app)
    conn.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO note (text) VALUES ('mine')")
    conn.commit()
    conn.close()
    before = app.read_bytes()
    with pytest.raises(ConfigurationError, match="file of its own"):
        Outbox(app)
    assert app.read_bytes() == before


def test_a_damaged_file_and_memory_are_refused(tmp_path):
    damaged = tmp_path / "events.db"
    damaged.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LocalDatabaseError):
        Outbox(damaged)
    with pytest.raises(ConfigurationError, match="file"):
        Outbox(":memory:")


#: the tables of an outbox file of the first version (no failures, faults, claims,
#: removed totals)
FIRST_VERSION = """
CREATE TABLE events (
    _id INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
    timestamp REAL NOT NULL, priority INTEGER NOT NULL DEFAULT 0);
CREATE TABLE processed_sync_data (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL);
CREATE TABLE dead_letters (
    _id INTEGER PRIMARY KEY, msg_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    processed_data BLOB NOT NULL, event_count INTEGER NOT NULL, priority INTEGER NOT NULL,
    key TEXT, size INTEGER NOT NULL, status INTEGER NOT NULL, response TEXT NOT NULL,
    failed_at REAL NOT NULL);
CREATE TABLE outbox_configs (type TEXT PRIMARY KEY, config TEXT NOT NULL);
CREATE TABLE outbox_merged (
    type TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (type, key));
CREATE TABLE outbox_state (
    type TEXT PRIMARY KEY, last_success REAL, last_error TEXT, last_error_at REAL,
    next_attempt REAL, failures INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0, requested INTEGER NOT NULL DEFAULT 0);
"""


def test_a_file_of_the_first_version_is_brought_up_to_date(tmp_path, receiver):
    path = tmp_path / "events.db"
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_VERSION)
    body = gzip.compress(b'{"do_1": 2}')
    conn.execute(
        "INSERT INTO processed_sync_data VALUES (1, 'm-old', 'COURSE_PROGRESS', ?, 1, 0, 'k', 11)",
        (body,),
    )
    conn.execute(
        "INSERT INTO events (type, key, data, timestamp) VALUES ('TELEMETRY', 'e1', '{}', 1.0)"
    )
    conn.commit()
    conn.close()
    box = Outbox(path)
    box.init(seed_configs(receiver.url))
    assert box.pending("COURSE_PROGRESS") == 1 and box.pending("TELEMETRY") == 1
    assert box.sync("COURSE_PROGRESS").events_sent == 1
    assert box.sync("TELEMETRY").events_sent == 1
    assert box.pending("COURSE_PROGRESS") == 0 and box.pending("TELEMETRY") == 0
    box.close()
    assert receiver.messages[0]["msg_id"] == "m-old"


def test_the_configurations_outlive_the_process(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(seed_configs(receiver.url))
    box.save("COURSE_PROGRESS", {"a": 1})
    box.close()
    again = Outbox(tmp_path / "events.db", retry=FAST)
    try:
        assert set(again.configurations) == {"TELEMETRY", "COURSE_PROGRESS", "COURSE_ASSESSMENT"}
        assert again.sync("COURSE_PROGRESS").events_sent == 1  # before any init
    finally:
        again.close()


# -- save -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kwargs"),
    [
        ({1, 2}, {}),
        ({"x": float("nan")}, {}),
        ({"when": object()}, {}),
        ("{not json", {}),
        (b"\xff\xfe", {}),
        ({"a": 1}, {"key": ""}),
        ({"a": 1}, {"key": 5}),
        ({"a": 1}, {"priority": "high"}),
        ({"a": 1}, {"priority": True}),
    ],
)
def test_an_unusable_event_is_refused_and_nothing_is_stored(outbox, data, kwargs):
    with pytest.raises(EventError):
        outbox.save("TELEMETRY", data, **kwargs)
    assert table_counts(outbox.path) == (0, 0)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"t": "\ud800"}, None),
        ('{"t": "\udc00"}', None),  # JSON text holding a lone surrogate
        ([1, "a\udfff"], None),
        ({"ok": 1}, "learner-\ud83d"),
    ],
)
def test_a_lone_surrogate_is_an_event_error_and_nothing_is_stored(outbox, data, key):
    with pytest.raises(EventError, match="surrogate") as info:
        outbox.save("COURSE_PROGRESS", data, key=key)
    assert info.value.hint
    assert table_counts(outbox.path) == (0, 0)


def test_an_event_larger_than_the_byte_cap_is_refused_and_nothing_is_dropped(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", max_pending_bytes=1 << 20)
    box.init(seed_configs(receiver.url), merge={"COURSE_PROGRESS": lambda a, b: {**a, **b}})
    for i in range(200):
        box.save("TELEMETRY", telemetry(i))
    with pytest.raises(EventError, match="max_pending_bytes"):
        box.save("TELEMETRY", {"blob": "x" * (2 << 20)})
    status = box.status()["TELEMETRY"]
    assert (status.pending_events, status.dropped) == (200, 0)
    # two saves under a key that merge into more than the cap: the later is refused
    box.save("COURSE_PROGRESS", {"a": "x" * (600 << 10)}, key="learner-7")
    with pytest.raises(EventError, match="max_pending_bytes"):
        box.save("COURSE_PROGRESS", {"b": "y" * (600 << 10)}, key="learner-7")
    status = box.status()["COURSE_PROGRESS"]
    assert (status.pending_events, status.dropped) == (1, 0)
    box.sync("COURSE_PROGRESS")
    assert list(receiver.events[-1]["data"]) == ["a"]
    box.close()


def test_an_unknown_type_is_refused_with_the_known_ones(outbox):
    with pytest.raises(EventError, match="TELEMETRY"):
        outbox.save("GRADES", {"a": 1})
    with pytest.raises(EventError):
        outbox.sync("GRADES")


def test_every_event_gets_a_unique_key(outbox):
    keys = {outbox.save("TELEMETRY", telemetry(i)) for i in range(500)}
    assert len(keys) == 500


def test_saves_from_many_threads_all_arrive_once(outbox, receiver):
    keys: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(100):
            key = outbox.save("TELEMETRY", telemetry(n * 1000 + i))
            with lock:
                keys.append(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    syncs = 0
    while any(t.is_alive() for t in threads):
        outbox.sync("TELEMETRY")
        syncs += 1
    for t in threads:
        t.join()
    outbox.sync("TELEMETRY")
    assert sorted(receiver.event_keys()) == sorted(keys)
    assert receiver.duplicates == 0
    assert syncs >= 1


# -- delivery ---------------------------------------------------------------------------


def test_a_batch_goes_gzipped_with_its_msg_id(outbox, receiver):
    keys = [outbox.save("TELEMETRY", SEED_EVENTS["TELEMETRY"]) for _ in range(3)]
    report = outbox.sync("TELEMETRY")
    assert (report.events_sent, report.messages_sent, report.pending_events) == (3, 1, 0)
    [message] = receiver.messages
    assert message["gzipped"] and message["method"] == "POST"
    assert (message["path"], message["query"]) == ("/sample_path", "sample_params")
    assert message["body"]["msg_id"] == message["msg_id"]
    assert [e["key"] for e in message["body"]["events"]] == keys
    assert all(e["data"] == json.loads(SEED_EVENTS["TELEMETRY"]) for e in message["body"]["events"])
    assert table_counts(outbox.path) == (0, 0)
    assert outbox.status()["TELEMETRY"].last_success is not None


def test_single_events_go_one_per_request_as_plain_json(outbox, receiver):
    outbox.save("COURSE_PROGRESS", SEED_EVENTS["COURSE_PROGRESS"])
    outbox.save("COURSE_ASSESSMENT", SEED_EVENTS["COURSE_ASSESSMENT"])
    outbox.save("COURSE_PROGRESS", {"second": True})
    assert outbox.sync("COURSE_PROGRESS").messages_sent == 2
    assert outbox.sync("COURSE_ASSESSMENT").messages_sent == 1
    assert [m["method"] for m in receiver.messages] == ["PATCH"] * 3
    assert not any(m["gzipped"] for m in receiver.messages)
    assert receiver.messages[0]["body"] == json.loads(SEED_EVENTS["COURSE_PROGRESS"])
    assert receiver.messages[2]["body"] == json.loads(SEED_EVENTS["COURSE_ASSESSMENT"])


def test_batches_are_bounded_and_every_event_is_in_one_place(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", batch_events=7, batch_bytes=4000, retry=FAST)
    box.init(seed_configs(receiver.url))
    total = 40
    for i in range(total):
        box.save("TELEMETRY", telemetry(i))
    seen: list[tuple[int, int]] = []
    inner = HttpSink("POST", receiver.url + "/t")

    class Watching:
        def deliver(self, delivery: Delivery) -> None:
            waiting, in_messages = table_counts(box.path)
            delivered = len(receiver.events)
            seen.append((waiting + in_messages + delivered, delivery.event_count))
            inner.deliver(delivery)

        def close(self) -> None:
            inner.close()

    box.init(seed_configs(receiver.url), sinks={"TELEMETRY": Watching()})
    box.sync("TELEMETRY")
    box.close()
    assert all(count == total for count, _ in seen)  # never lost, never in two places
    assert all(n <= 7 for _, n in seen)
    sizes = [len(json.dumps(m["body"]["events"][0]["data"])) for m in receiver.messages]
    assert sizes and len(receiver.events) == total
    assert len(receiver.messages) >= total // 7  # the byte bound splits further


def test_higher_priority_goes_first_within_a_type(outbox, receiver):
    for i in range(3):
        outbox.save("COURSE_PROGRESS", {"n": i, "p": 0})
    outbox.save("COURSE_PROGRESS", {"n": 9, "p": 5}, priority=5)
    outbox.save("COURSE_PROGRESS", {"n": 8, "p": 1}, priority=1)
    outbox.sync("COURSE_PROGRESS")
    assert [m["body"]["n"] for m in receiver.messages] == [9, 8, 0, 1, 2]


def test_same_key_replaces_a_waiting_event(outbox, receiver):
    outbox.save("COURSE_PROGRESS", {"progress": 10}, key="learner-1/course-1")
    outbox.save("COURSE_PROGRESS", {"progress": 40}, key="learner-1/course-1")
    outbox.save("COURSE_PROGRESS", {"progress": 5}, key="learner-2/course-1")
    outbox.sync("COURSE_PROGRESS")
    bodies = sorted((e["key"], e["data"]["progress"]) for e in receiver.events)
    assert bodies == [("learner-1/course-1", 40), ("learner-2/course-1", 5)]


def test_a_merge_function_never_lets_progress_go_backwards(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=1, base=0.01))
    box.init(seed_configs(receiver.url), merge={"COURSE_PROGRESS": per_key_max})
    key = "learner-1"
    box.save("COURSE_PROGRESS", {"do_1": 2, "do_2": 1}, key=key)
    box.save("COURSE_PROGRESS", {"do_1": 1, "do_3": 1}, key=key)  # older news for do_1
    # the first message fails: it stays in line, unacknowledged
    receiver.fail(503)
    with pytest.raises(TransientError):
        box.sync("COURSE_PROGRESS")
    # a save under the key merges with the message still waiting for its answer
    box.save("COURSE_PROGRESS", {"do_2": 2}, key=key)
    box.sync("COURSE_PROGRESS")
    # once acknowledged, the next save merges with the state the receiver holds
    box.save("COURSE_PROGRESS", {"do_4": 1}, key=key)
    box.sync("COURSE_PROGRESS")
    box.close()
    sent = [e["data"] for e in receiver.events]
    assert sent == [
        {"do_1": 2, "do_2": 1, "do_3": 1},
        {"do_1": 2, "do_2": 2, "do_3": 1},
        {"do_1": 2, "do_2": 2, "do_3": 1, "do_4": 1},
    ]


def test_a_failing_merge_function_is_an_event_error(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db")
    box.init(seed_configs(receiver.url), merge={"COURSE_PROGRESS": lambda a, b: a["nope"]})
    box.save("COURSE_PROGRESS", {"a": 1}, key="k")
    with pytest.raises(EventError, match="merge"):
        box.save("COURSE_PROGRESS", {"a": 2}, key="k")
    assert box.status()["COURSE_PROGRESS"].pending_events == 1
    box.close()


# -- failures ---------------------------------------------------------------------------


def test_server_errors_are_retried_with_the_same_msg_id(outbox, receiver):
    outbox.save("TELEMETRY", telemetry(1))
    receiver.fail(500, times=2)
    report = outbox.sync("TELEMETRY")
    assert report.events_sent == 1
    assert receiver.refused == [500, 500]
    assert receiver.requests == 3 and len(receiver.messages) == 1


def test_retry_after_is_honoured(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=Retry(attempts=2, base=0.01, cap=5))
    box.init(seed_configs(receiver.url))
    box.save("TELEMETRY", telemetry(1))
    receiver.fail(429, retry_after=1)
    start = time.monotonic()
    box.sync("TELEMETRY")
    assert time.monotonic() - start >= 0.9  # waited as asked, not the 0.01 s backoff
    assert len(receiver.events) == 1
    box.close()


def test_retry_after_reads_seconds_and_dates():
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert retry_after("7") == 7.0
    assert retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_a_refusal_is_dead_lettered_and_can_be_requeued(outbox, receiver):
    outbox.save("COURSE_PROGRESS", {"bad": 1})
    outbox.save("COURSE_PROGRESS", {"good": 1})
    receiver.fail(400)
    report = outbox.sync("COURSE_PROGRESS")
    assert (report.dead_lettered, report.events_sent) == (1, 1)
    [dead] = outbox.dead_letters()
    assert (dead.status, dead.type, dead.response) == (400, "COURSE_PROGRESS", "scripted 400")
    status = outbox.status()["COURSE_PROGRESS"]
    assert (status.dead_letters, status.pending_events) == (1, 0)
    # never retried blindly
    assert outbox.sync("COURSE_PROGRESS").messages_sent == 0
    assert outbox.requeue("COURSE_PROGRESS") == 1
    assert outbox.sync("COURSE_PROGRESS").events_sent == 1
    assert receiver.messages[-1]["msg_id"] == dead.msg_id
    assert receiver.messages[-1]["body"] == {"bad": 1}
    assert outbox.dead_letters() == []


def test_offline_raises_and_keeps_everything(tmp_path):
    with EventReceiver() as gone:
        url = gone.url
    box = Outbox(tmp_path / "events.db", retry=FAST)
    box.init(seed_configs(url))
    for i in range(5):
        box.save("TELEMETRY", telemetry(i))
    with pytest.raises(OfflineError):
        box.sync("TELEMETRY")
    status = box.status()["TELEMETRY"]
    assert status.pending_events == 5
    assert status.last_error and "OfflineError" in status.last_error
    assert status.next_attempt is not None and status.next_attempt > time.time() - 1
    box.close()


def test_a_reset_connection_is_retried(outbox, receiver):
    outbox.save("TELEMETRY", telemetry(1))
    receiver.reset(times=2)
    assert outbox.sync("TELEMETRY").events_sent == 1
    assert len(receiver.events) == 1


def test_an_answer_too_late_is_sent_again_and_dropped_as_a_duplicate(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", retry=FAST, timeout=0.3)
    box.init(seed_configs(receiver.url))
    box.save("TELEMETRY", telemetry(1))
    receiver.slow(0.8)
    assert box.sync("TELEMETRY").events_sent == 1
    time.sleep(0.8)  # the slow request lands after the retry
    assert len(receiver.events) == 1
    assert receiver.duplicates == 1
    box.close()


def test_caps_drop_the_oldest_of_the_lowest_priority_and_say_so(tmp_path, receiver, caplog):
    box = Outbox(tmp_path / "events.db", max_pending=10)
    box.init(seed_configs(receiver.url))
    important = [box.save("TELEMETRY", telemetry(i), priority=1) for i in range(3)]
    routine = [box.save("TELEMETRY", telemetry(10 + i)) for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="replicator"):
        box.save("TELEMETRY", telemetry(99))
    assert box.status()["TELEMETRY"].dropped == 6
    assert box.status()["TELEMETRY"].pending_events == 10
    assert "dropped" in caplog.text
    box.sync("TELEMETRY")
    got = set(receiver.event_keys())
    assert set(important) <= got
    assert not set(routine[:6]) & got
    box.close()


def test_a_byte_cap_counts_messages_too(tmp_path, receiver):
    one = len(SEED_EVENTS["TELEMETRY"])
    box = Outbox(tmp_path / "events.db", max_pending_bytes=one * 4, batch_events=2, retry=FAST)
    box.init(seed_configs(receiver.url))
    for _ in range(4):
        box.save("TELEMETRY", SEED_EVENTS["TELEMETRY"])
    with EventReceiver() as dead:
        box.init(seed_configs(dead.url))
    receiver_gone = box.configurations["TELEMETRY"].api.url
    assert receiver_gone.startswith("http://127.0.0.1")
    with pytest.raises(OfflineError):
        box.sync("TELEMETRY")  # the first batch is built, then the receiver is gone
    box.save("TELEMETRY", SEED_EVENTS["TELEMETRY"])
    status = box.status()["TELEMETRY"]
    assert status.pending_bytes <= one * 4 and status.dropped == 1
    box.close()


def test_the_http_sink_maps_every_answer(receiver):
    sink = HttpSink("POST", receiver.url + "/x", timeout=2)
    body = gzip.compress(b'{"msg_id":"m1","type":"T","events":[]}')
    sink.deliver(Delivery("m1", "T", body, True, 0))
    for status, error in ((408, TransientError), (503, TransientError), (429, TransientError)):
        receiver.fail(status)
        with pytest.raises(error):
            sink.deliver(Delivery(f"m{status}", "T", body, True, 0))
    from replicator import DeliveryRejected

    receiver.fail(404)
    with pytest.raises(DeliveryRejected) as info:
        sink.deliver(Delivery("m404", "T", body, True, 0))
    assert info.value.status == 404 and "scripted" in info.value.response
    sink.close()


def test_dropping_at_the_cap_reads_a_few_rows_not_the_backlog(tmp_path, receiver):
    box = Outbox(tmp_path / "events.db", max_pending=2000)
    box.init(seed_configs(receiver.url))
    for i in range(2000):
        box.save("TELEMETRY", {"i": i}, priority=i % 3)
    statements: list[str] = []
    box._file.conn().set_trace_callback(statements.append)  # with the values bound
    box.save("TELEMETRY", {"i": "one too many"})
    box._file.conn().set_trace_callback(None)
    assert box.status()["TELEMETRY"].dropped == 1
    reads = [s for s in statements if s.startswith(("SELECT", "DELETE"))]
    assert reads, statements
    conn = sqlite3.connect(box.path)
    plans = [row[3] for sql in reads for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
    conn.close()
    assert not [p for p in plans if p.startswith("SCAN") or "TEMP B-TREE" in p], plans
    box.close()


def test_a_failing_app_sink_is_a_remote_error_and_keeps_the_message(tmp_path, receiver):
    from replicator import RemoteError

    class Broken:
        def deliver(self, delivery):
            raise ValueError("the app's sink has a bug")

        def close(self):
            pass

    box = Outbox(tmp_path / "events.db")
    box.init(seed_configs(receiver.url), sinks={"COURSE_PROGRESS": Broken()})
    box.save("COURSE_PROGRESS", {"a": 1})
    with pytest.raises(RemoteError, match="sink of COURSE_PROGRESS failed"):
        box.sync("COURSE_PROGRESS")
    assert box.status()["COURSE_PROGRESS"].pending_events == 1
    box.close()


def test_connections_of_ended_threads_are_closed(outbox):
    def save_once():
        outbox.save("TELEMETRY", {"a": 1})

    for _ in range(30):
        t = threading.Thread(target=save_once)
        t.start()
        t.join()
    save_once()
    assert outbox._file.open_connections() <= 3  # this thread, the last one, at most one more
    assert outbox.status()["TELEMETRY"].pending_events == 31
