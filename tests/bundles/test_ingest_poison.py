"""One poison bundle must not take the service down. Whatever a bundle holds (a row
``{"$bytes": 5}``, a line nested 50,000 deep, a key the bucket refuses), its failure
is that bundle's rejection with a reason: the service goes on and applies the
legitimate bundles behind it, by the queue and over HTTP, and a restarted ingestor
does not meet the poison again. Memory stays flat: a compression bomb within
``max_bundle_bytes`` is refused without being expanded."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from replicator import DeviceRecord, Ingestor, IngestRequest, StoreIngest
from tests.bundles.kit import TAKEN, Desk, row
from tests.helpers import ROOT

DEEP = "[" * 50_000 + "]" * 50_000


def _poison_rows(desk: Desk, lines: list[Any], **header: Any) -> IngestRequest:
    return desk.request(lines, device="collector-1", **header)


POISONS = {
    "a row {'$bytes': 5}": lambda d: _poison_rows(d, [row(1), '{"$bytes": 5}']),
    "a value {'$bytes': 5}": lambda d: _poison_rows(d, [row(1, head={"$bytes": 5})]),
    "a line nested 50,000 deep": lambda d: _poison_rows(d, [row(1), DEEP]),
    "a header nested 50,000 deep": lambda d: d.put(
        gzip.compress(DEEP.encode() + b"\n"), device="collector-1"
    ),
    "a value nested 50,000 deep": lambda d: _poison_rows(
        d, ['{"id": "00000000-0000-4000-8000-000000000001", "head": ' + DEEP + "}"]
    ),
    "a key ending in .meta.json": lambda d: IngestRequest(
        bundle="b-meta",
        key="bundles/collector-1/b-meta.meta.json",
        sha256="a" * 64,
        size=10,
        count=1,
        collection="households",
        device="collector-1",
    ),
    "a number of 100,000 digits": lambda d: _poison_rows(
        d, ['{"id": "00000000-0000-4000-8000-000000000001", "members": ' + "9" * 100_000 + "}"]
    ),
    "bytes that are not UTF-8": lambda d: _poison_rows(d, [b"\xff\xfe{}"]),
    "a tagged value of bad hex": lambda d: _poison_rows(d, [row(1, head={"$hex": "zz"})]),
    "an outbox message nested 50,000 deep": lambda d: d.put(
        gzip.compress(b'{"msg_id": "m1", "type": "T", "events": [' + DEEP.encode() + b"]}"),
        device="collector-1",
        bundle="m1",
        collection="outbox:T",
    ),
    "an outbox message of another msg_id": lambda d: d.put(
        gzip.compress(b'{"msg_id": ["m2"], "type": {"$bytes": 5}, "events": [{}]}'),
        device="collector-1",
        bundle="m2",
        collection="outbox:T",
    ),
}


@pytest.fixture
def desk(tmp_path):
    return Desk(tmp_path)


def _queue(desk: Desk, request: IngestRequest) -> None:
    StoreIngest(desk.remote).submit(request, DeviceRecord(request.device))


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poison_bundle_in_the_queue_is_rejected_and_the_ones_behind_it_applied(desk, poison):
    bad = POISONS[poison](desk)
    good = desk.request([row(7)], device="collector-2")
    _queue(desk, bad)
    _queue(desk, good)
    decided = {r.bundle: r for r in desk.ingestor.poll()}
    assert decided[bad.bundle].state == "rejected" and decided[bad.bundle].reason
    assert decided[good.bundle].state == "accepted" and decided[good.bundle].accepted == 1
    assert row(1)["id"] not in desk.stored()
    # a restarted ingestor does not meet it again: it is decided
    again = Ingestor(desk.blobs, desk.remote, TAKEN, name="restarted", lease=1)
    assert again.poll() == []


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_poison_bundle_over_http_is_rejected_and_the_service_goes_on(desk, poison):
    with desk.ingestor.serve() as server:
        answer = httpx.post(server.url, json=POISONS[poison](desk).to_json(), timeout=30)
        assert answer.status_code == 200 and answer.json()["state"] == "rejected", answer.text
        assert answer.json()["reason"]
        good = desk.request([row(7)], device="collector-2")
        answer = httpx.post(server.url, json=good.to_json(), timeout=30)
        assert answer.status_code == 200 and answer.json()["state"] == "accepted"


def test_the_ingestor_loop_outlives_a_poison_bundle(desk):
    stop = threading.Event()
    loop = threading.Thread(target=desk.ingestor.run, kwargs={"poll_every": 0.05, "stop": stop})
    loop.start()
    try:
        _queue(desk, POISONS["a row {'$bytes': 5}"](desk))
        _queue(desk, POISONS["a line nested 50,000 deep"](desk))
        good = desk.request([row(7)], device="collector-2")
        _queue(desk, good)
        deadline = time.monotonic() + 20
        while row(7)["id"] not in desk.stored() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert row(7)["id"] in desk.stored()
        assert loop.is_alive()
    finally:
        stop.set()
        loop.join(10)


def test_a_bundle_that_trips_a_bug_is_rejected_with_a_reason_not_a_crash(desk, monkeypatch):
    from replicator.bundles import rows

    def broken(*args: Any, **kw: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(rows, "checked_row", broken)
    result = desk.send([row(1)], device="collector-1")
    assert result.state == "rejected" and "KeyError" in result.reason
    monkeypatch.undo()
    assert desk.send([row(2)], device="collector-1").state == "accepted"


# -- memory: rows counted and checked as they are read ------------------------------------

_MEASURE = """
import resource, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.bundles.kit import Desk
import gzip
desk = Desk(Path({place!r}))
data = Path({bomb!r}).read_bytes()
request = desk.put(data, device="collector-1", bundle="bomb", collection={collection!r},
                   count={count})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.process_time()
result = desk.ingestor.submit(request)
print(result.state, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024,
      round(time.process_time() - started, 2), result.reason, sep="|")
"""


@pytest.mark.parametrize(
    ("kind", "collection", "count"),
    [
        ("rows beyond the count", "households", 1),
        ("invalid rows", "households", 100_000),
        ("the same row again and again", "households", 100_000),
        ("an outbox message of empty events", "outbox:T", 1),
    ],
)
def test_an_8_kib_compression_bomb_is_refused_without_expanding_it(
    tmp_path, kind, collection, count
):
    head = json.dumps(
        {"format": "replicator-bundle/1", "bundle": "bomb", "device": "collector-1",
         "collection": collection, "count": count, "columns": ["id"]}
    ).encode() + b"\n"  # fmt: skip
    if kind in ("rows beyond the count", "invalid rows"):
        data = gzip.compress(head + b"{}\n" * 2_800_000, compresslevel=9, mtime=0)
    elif kind == "the same row again and again":
        line = json.dumps(row(1)).encode() + b"\n"
        data = gzip.compress(head + line * 25_000, compresslevel=9, mtime=0)
    else:
        body = b'{"msg_id": "bomb", "type": "T", "events": [' + b"{}," * 2_800_000 + b"{}]}"
        data = gzip.compress(body, compresslevel=9, mtime=0)
    assert len(data) <= 32 << 10  # a few KiB, well within max_bundle_bytes
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(data)
    code = _MEASURE.format(
        root=str(ROOT), place=str(tmp_path), bomb=str(bomb), collection=collection, count=count
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    state, grown_mib, cpu, reason = out.stdout.strip().split("|", 3)
    assert state == "rejected", reason
    assert int(grown_mib) < 40, f"peak RSS grew {grown_mib} MiB ({reason})"
    assert float(cpu) < 3.0, f"{cpu} s of CPU ({reason})"
