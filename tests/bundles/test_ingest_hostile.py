"""The ingest service against hostile or damaged input, and a device against a
misbehaving service. An attacker may control a bundle and its request together
(so the checksum matches): every outcome is *accepted* (with refused rows) or
*rejected* with a reason, never an exception, and a rejected bundle applies
nothing. REPLICATOR_INGEST_FUZZ sets the number of random bundle mutations
(default 200)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
from typing import Any

import httpx
import peewee
import pytest

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    Ingestor,
    IngestRequest,
    IngestResult,
    RemoteError,
    Replicator,
)
from replicator.bundles.format import FORMAT
from replicator.codec import encode_json
from replicator.model import remote_columns
from tests.campaign_models import MODELS, REFERENCE, Household

#: what the campaign service takes: its upload-only collections
TAKEN = [Household]

CASES = int(os.environ.get("REPLICATOR_INGEST_FUZZ", "200"))
#: a well-formed ingest request naming an object that does not exist
WELL_FORMED = {
    "bundle": "b9",
    "key": "bundles/dev/b9",
    "sha256": "a" * 64,
    "size": 1,
    "count": 1,
    "collection": "households",
    "device": "dev",
}
WHEN = "2026-11-23 10:00:00.123456"


def row(i: int, **over: Any) -> dict[str, Any]:
    base = {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "head": f"head {i}",
        "members": i,
        "village": "v",
        "createdOn": WHEN,
        "updatedOn": WHEN,
        "updatedBy": "dev",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def bundle_bytes(rows: list[Any], **header: Any) -> bytes:
    head = {
        "format": FORMAT,
        "bundle": "b1",
        "device": "dev",
        "collection": "households",
        "count": len(rows),
        "columns": remote_columns(Household),
        **header,
    }
    lines = [encode_json(head)] + [r if isinstance(r, str) else encode_json(r) for r in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


class Service:
    def __init__(self, tmp_path: Any) -> None:
        self.blobs = DirectoryBlobStore(tmp_path / "bucket")
        self.remote = EmbeddedRemote(tmp_path / "remote.db")
        self.ingestor = Ingestor(self.blobs, self.remote, TAKEN, name="t")
        self.n = 0

    def ingest(self, data: bytes, **request: Any) -> IngestResult:
        self.n += 1
        bundle = request.pop("bundle", f"b{self.n}")
        key = request.pop("key", f"bundles/dev/{bundle}.ndjson.gz")
        if key.startswith("bundles/") and ".." not in key:
            self.blobs.put(key, io.BytesIO(data))
        req = IngestRequest(
            bundle=bundle,
            key=key,
            sha256=request.pop("sha256", hashlib.sha256(data).hexdigest()),
            size=request.pop("size", len(data)),
            count=request.pop("count", 0),
            collection=request.pop("collection", "households"),
            device=request.pop("device", "dev"),
        )
        return self.ingestor.submit(req)

    def ingest_rows(self, rows: list[Any], **header: Any) -> IngestResult:
        self.n += 1
        bundle = f"b{self.n}"
        header.setdefault("bundle", bundle)
        data = bundle_bytes(rows, **header)
        count = header.get("count", len(rows))
        return self.ingest(data, bundle=bundle, count=count if isinstance(count, int) else 0)

    def stored(self) -> dict[str, Any]:
        return {i: d.data for i, d in self.remote.all_docs("households").items()}


@pytest.fixture
def service(tmp_path):
    return Service(tmp_path)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (row(1, members="many"), "members"),
        (row(1, members=2**70), "64 bits"),
        (row(1, members=1.5), "members"),
        (row(1, head=None), "head is null"),
        (row(1, head={"nested": 1}), "head"),
        (row(1, colour="red"), "unknown field 'colour'"),
        (row(1, id="x" * 80), "not a row id"),
        (row(1, id=None), "not a row id"),
        (row(1, id="a/b"), "not a row id"),
        (row(1, updatedOn="yesterday"), "updatedOn"),
        (row(1, updatedOn=_DROP), "updatedOn is missing"),
        (row(1, head=_DROP), "head is missing"),
        (row(1, members=True), None),  # a bool in an integer column is an integer
        ([1, 2, 3], "not a JSON object"),
        ("null", "not a JSON object"),
    ],
)
def test_a_bad_row_is_refused_with_its_reason_and_the_others_applied(service, bad, says):
    result = service.ingest_rows([row(0), bad, row(2)])
    assert result.state == "accepted"
    stored = service.stored()
    assert row(0)["id"] in stored and row(2)["id"] in stored
    if says is None:
        assert not result.refused and len(stored) == 3
    else:
        (reason,) = result.refused.values()
        assert says in reason and len(stored) == 2


def test_the_same_id_twice_in_one_bundle_is_refused(service):
    result = service.ingest_rows([row(0), row(1), row(1, head="other")])
    assert result.state == "accepted" and list(result.refused) == [row(1)["id"]]
    assert set(service.stored()) == {row(0)["id"]}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"key": "snapshots/manifest.json"}, "bundles/ only"),
        ({"key": "bundles/../snapshots/x"}, "bundles/ only"),
        ({"size": 10}, "longer"),
        ({"size": 10**12}, "larger than"),
        ({"sha256": "0" * 64}, "altered"),
        ({"collection": "nowhere"}, "not a collection"),
        ({"collection": "form_schemas"}, "not a collection this service takes"),
        ({"device": "someone-else"}, "folder of the device"),
        ({"device": "someone-else", "key": "bundles/someone-else/bx"}, "another device"),
        ({"device": "a/b", "key": "bundles/a/b/bx"}, "not a device name"),
        ({"count": 5}, "another count"),
    ],
)
def test_a_request_that_does_not_match_its_bundle_is_rejected(service, change, says):
    data = bundle_bytes([row(0), row(1)], bundle="bx")
    result = service.ingest(data, **{"bundle": "bx", "count": 2, **change})
    assert result.state == "rejected" and says in result.reason, result.reason
    assert service.stored() == {}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "ends early"),
        (b"plain text, not gzip", "gzip"),
        (gzip.compress(b""), "empty"),
        (gzip.compress(b"{not json\n"), "header is not JSON"),
        (gzip.compress(b'{"format": "other"}\n'), "format"),
        (bundle_bytes(["{bad"], bundle="b1"), "line 2"),
        (bundle_bytes([row(0)])[:-9], "ends early"),
        (bundle_bytes([row(0)]) + b"garbage", "follow"),
        (bundle_bytes([row(0)], count=2), "another count"),
    ],
)
def test_a_malformed_bundle_is_rejected_whole(service, data, says):
    result = service.ingest(data, bundle="b1", count=1)
    assert result.state == "rejected" and says in result.reason, result.reason
    assert service.stored() == {}


def test_a_compression_bomb_is_refused_without_expanding_it(tmp_path):
    svc = Service(tmp_path)
    svc.ingestor.max_bundle_bytes = 1 << 20
    data = bundle_bytes([" " * (50 << 20)], bundle="b1")
    assert len(data) < 1 << 20
    result = svc.ingest(data, bundle="b1", count=1)
    assert result.state == "rejected" and "expands past" in result.reason


def test_random_mutations_of_a_bundle_with_a_matching_checksum(service):
    rng = random.Random(int(os.environ.get("REPLICATOR_INGEST_FUZZ_SEED", "0")) or None)
    rows = [row(i) for i in range(6)]
    outcomes = {"accepted": 0, "rejected": 0, "refused rows": 0}
    for case in range(CASES):
        data = bytearray(bundle_bytes(rows, bundle=f"f{case}"))
        kind = rng.choice(["flip", "cut", "raw-flip", "insert"])
        if kind == "raw-flip":  # inside the JSON text, then compressed again
            text = bytearray(gzip.decompress(bytes(data)))
            text[rng.randrange(len(text))] ^= 1 << rng.randrange(8)
            data = bytearray(gzip.compress(bytes(text), mtime=0))
        elif kind == "flip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            del data[rng.randrange(len(data)) :]
        else:
            data.insert(rng.randrange(len(data)), rng.randrange(256))
        before = service.stored()
        result = service.ingest(bytes(data), bundle=f"f{case}", count=len(rows))
        assert result.state in ("accepted", "rejected")
        if result.state == "rejected":
            assert result.reason
            assert service.stored() == before  # nothing of it applied
            outcomes["rejected"] += 1
        else:
            outcomes["accepted"] += 1
            outcomes["refused rows"] += len(result.refused)
    print(f"{CASES} mutated bundles: {outcomes}")
    assert outcomes["rejected"] > 0


def test_the_http_endpoint_refuses_malformed_requests(service):
    with service.ingestor.serve() as server:
        for body in (b"", b"[]", b"{", b'{"bundle": "x"}', b"[" * 30000 + b"]" * 30000):
            answer = httpx.post(server.url, content=body)
            assert answer.status_code == 400, (body[:20], answer.text)
            assert "error" in answer.json()
        answer = httpx.post(server.url, content=b"x" * 70000)
        assert answer.status_code == 413 and "at most" in answer.json()["error"]
        answer = httpx.post(server.url, json=WELL_FORMED)  # no such object: rejected, 200
        assert answer.status_code == 200 and answer.json()["state"] == "rejected"


class Misbehaving:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def submit(self, request: IngestRequest, device: Any) -> IngestResult:
        return self.answer(request)


def collector_of(tmp_path: Any, service: Any) -> Replicator:
    """A collector whose bundles go to ``service``."""
    return Replicator(
        peewee.SqliteDatabase(str(tmp_path / "c.db")),
        MODELS,
        EmbeddedRemote(tmp_path / "remote.db"),
        bundles=Bundles(DirectoryBlobStore(tmp_path / "bucket"), service, [Household]),
        download_only=REFERENCE,
    )


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: IngestResult("another-bundle", "accepted", accepted=1),
        lambda r: (_ for _ in ()).throw(RemoteError("the service answered nonsense")),
    ],
)
def test_a_misbehaving_service_never_gets_rows_marked_synced(tmp_path, answer):
    device = collector_of(tmp_path, Misbehaving(answer))
    with device.bound():
        Household.create(head="a")
    with pytest.raises(RemoteError):
        device.sync()
    assert device.pending_count() == 1


def test_refusals_naming_rows_outside_the_bundle_are_ignored(tmp_path):
    def answer(r: IngestRequest) -> IngestResult:
        return IngestResult(r.bundle, "accepted", accepted=1, refused={"not-mine": "no"})

    device = collector_of(tmp_path, Misbehaving(answer))
    with device.bound():
        Household.create(head="a")
    report = device.sync()
    assert report.bundled == {"households": 1} and device.refused(Household) == []


def test_an_object_longer_than_its_request_is_not_read_to_its_end_on_s3(tmp_path, any_s3_blobs):
    svc = Service(tmp_path)
    svc.blobs = any_s3_blobs
    svc.ingestor = Ingestor(any_s3_blobs, svc.remote, TAKEN, name="s3")
    data = bundle_bytes([row(0)], bundle="bx") + os.urandom(3 << 20)
    result = svc.ingest(data, bundle="bx", count=1, size=100)
    assert result.state == "rejected" and "longer" in result.reason, result.reason


def test_a_bundle_of_mostly_invalid_rows_is_rejected_whole_so_its_result_stays_small(service):
    from replicator.bundles.ingest import MAX_REFUSED

    rows = [row(i, members="x" * 300) for i in range(MAX_REFUSED + 1)] + [row(10**6)]
    result = service.ingest_rows(rows)
    assert result.state == "rejected" and f"more than {MAX_REFUSED}" in result.reason
    assert service.stored() == {}


def test_a_bug_in_the_service_is_a_500_not_a_dropped_connection(service):
    def broken(request: Any) -> Any:
        raise KeyError("a bug")

    service.ingestor.submit = broken  # type: ignore[method-assign]
    with service.ingestor.serve() as server:
        answer = httpx.post(server.url, json=WELL_FORMED)
    assert answer.status_code == 500 and "try again" in answer.json()["error"]


def test_a_row_deleted_on_the_service_stays_deleted_and_is_refused(service):
    from replicator.stores.base import DeviceRecord, Write

    first = service.ingest_rows([row(0), row(1)])
    assert first.accepted == 2
    service.remote.push(  # the supervisor deleted row 1 meanwhile
        [Write("households", row(1)["id"], {}, deleted=True, unconditional=True)],
        DeviceRecord("supervisor"),
    )
    later = service.ingest_rows([row(1, head="again", updatedOn="2027-01-01 00:00:00"), row(2)])
    assert later.state == "accepted" and later.accepted == 1
    assert later.refused == {row(1)["id"]: "deleted on the service"}
    docs = service.remote.all_docs("households")
    assert docs[row(1)["id"]].deleted and row(2)["id"] in docs
