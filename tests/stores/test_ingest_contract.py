"""The IngestService contract (stores/ingest.py), run against every implementation:
``HttpIngest`` talking to a real ``IngestServer`` (uvicorn) over 127.0.0.1, with the
device's own token, and ``StoreIngest``
over a real queue (the ``ingest_requests`` collection of an ``EmbeddedRemote``) that an
``Ingestor`` drains. Bundles are real objects in a ``DirectoryBlobStore``, put there
first, as a sender does.

Each test states one promise of the protocol's docstring. A service may answer
``pending`` before it decides (the queue always does), so a decision is read the way
a device reads it: ask, let the service work, ask again."""

from __future__ import annotations

import contextlib
import hashlib
import io
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from replicator import (
    DeviceRecord,
    DeviceTokens,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    IngestRequest,
    IngestResult,
    OfflineError,
    RemoteError,
    StoreIngest,
    TransientError,
)
from replicator.bundles.format import bundle_header, pack, put_once
from replicator.codec import encode_json
from replicator.model import remote_columns
from replicator.stores.ingest import QUEUE, IngestService
from tests.campaign_models import Household

ME = DeviceRecord(installation_id="collector-1", name="collector", platform="test")
TOKEN = "s3cret-of-collector-1"
AUTH = DeviceTokens({ME.installation_id: TOKEN})
WHEN = "2026-11-23 10:00:00.123456"


def row(i: int, **over: Any) -> dict[str, Any]:
    """A household row in SQLite form, as a device bundles it."""
    return {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "head": f"head {i}",
        "members": 1 + i % 7,
        "village": "north",
        "createdOn": WHEN,
        "updatedOn": WHEN,
        "updatedBy": ME.installation_id,
        **over,
    }


class Seam:
    """One implementation of the seam with the service behind it: ``service`` is what
    a device holds, ``remote`` and ``blobs`` the campaign's store and bucket."""

    name = ""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.path = tmp_path / "remote.db"
        self.blobs = DirectoryBlobStore(tmp_path / "bucket")
        self.remote = EmbeddedRemote(self.path)
        self.ingestor = Ingestor(self.blobs, self.remote, [Household], name="contract")
        self.service: IngestService
        self.n = 0
        self._closing: list[Any] = []

    def work(self) -> None:
        """Let the service side do what it does between two questions."""

    def unreachable(self) -> IngestService:
        """The service as a device holds it when it cannot be reached."""
        raise NotImplementedError

    def refusing(self) -> IngestService:
        """The service as a device holds it when it refuses the requests themselves."""
        raise NotImplementedError

    def impatient(self) -> IngestService:
        """The service over the same store, giving up on a locked store within 0.3 s."""
        raise NotImplementedError

    def close(self) -> None:
        for thing in reversed(self._closing):
            thing.close()

    # -- what a sender does before it asks ------------------------------------------

    def put(self, rows: list[Any], bundle: str | None = None, **header: Any) -> IngestRequest:
        """Put a bundle of ``rows`` in the bucket, as a device does, and the request
        naming it. ``header`` overrides fields of the bundle's header."""
        self.n += 1
        bundle = bundle or f"bundle-{self.n}"
        head = bundle_header(
            bundle=bundle,
            device=ME.installation_id,
            collection="households",
            columns=remote_columns(Household),
            app_version="1.0",
            count=len(rows),
        )
        packed = pack({**head, **header}, [encode_json(r).encode() for r in rows])
        key = f"bundles/{ME.installation_id}/{bundle}-{self.n}.ndjson.gz"
        with packed.body:
            assert put_once(self.blobs, key, packed.body, packed.sha256)
        return IngestRequest(
            bundle=bundle,
            key=key,
            sha256=packed.sha256,
            size=packed.size,
            count=len(rows),
            collection="households",
            device=ME.installation_id,
        )

    def stored(self) -> dict[tuple[str, str], Any]:
        """Every document of the campaign's store, with its version."""
        return {
            (coll, i): (d.version, d.data)
            for coll in ("households", QUEUE)
            for i, d in self.remote.all_docs(coll).items()
        }

    def households(self) -> dict[str, str]:
        return {i: d.data["head"] for i, d in self.remote.all_docs("households").items()}


class Http(Seam):
    name = "http"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.server = self.ingestor.serve(auth=AUTH)
        self._closing.append(self.server)
        self.service = self._client(self.server.url, token=TOKEN)

    def _client(self, url: str, *, token: str | None = None, timeout: float = 30) -> HttpIngest:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = HttpIngest(url, headers=headers, timeout=timeout)
        self._closing.append(client)
        return client

    def unreachable(self) -> IngestService:
        gone = self.ingestor.serve()
        gone.close()  # nothing listens on its port any more
        return self._client(gone.url, token=TOKEN, timeout=5)

    def refusing(self) -> IngestService:
        return self._client(self.server.url, token="wrong")

    def impatient(self) -> IngestService:
        remote = EmbeddedRemote(self.path, timeout=0.3)
        impatient = Ingestor(self.blobs, remote, [Household], name="impatient")
        server = impatient.serve(auth=AUTH)
        self._closing.append(server)
        return self._client(server.url, token=TOKEN)


class Queue(Seam):
    name = "queue"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        # the device's own handle on the store, as a device opens it
        self.service = StoreIngest(EmbeddedRemote(self.path))

    def work(self) -> None:
        self.ingestor.poll()

    def unreachable(self) -> IngestService:
        # a queue on a share that worked, then went away (unmounted)
        share = self.tmp / "share"
        share.mkdir()
        remote = EmbeddedRemote(share / "remote.db")
        share.rename(self.tmp / "unmounted")
        return StoreIngest(remote)

    def refusing(self) -> IngestService:
        damaged = self.tmp / "damaged.db"
        damaged.write_bytes(b"this is no database " * 400)
        return StoreIngest(EmbeddedRemote(damaged, create=False))

    def impatient(self) -> IngestService:
        return StoreIngest(EmbeddedRemote(self.path, timeout=0.3))


@pytest.fixture(params=[Http, Queue], ids=lambda kind: kind.name)
def seam(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Seam]:
    made: Seam = request.param(tmp_path)
    yield made
    made.close()


def ask(service: IngestService, request: IngestRequest) -> IngestResult:
    """One question; whatever the answer, it is about the bundle asked about."""
    result = service.submit(request, ME)
    assert isinstance(result, IngestResult)
    assert result.bundle == request.bundle
    return result


def decision(seam: Seam, request: IngestRequest) -> IngestResult:
    """The service's decision, read as a device reads it: ask, and if the answer is
    ``pending``, let the service work and ask again."""
    first = ask(seam.service, request)
    if first.state != "pending":
        return first
    seam.work()
    result = ask(seam.service, request)
    assert result.state != "pending", "the service never decided"
    return result


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """The store's file held by another writer (a long transaction elsewhere)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_every_implementation_is_an_ingest_service(seam):
    assert isinstance(seam.service, IngestService)


def test_a_verified_bundle_is_accepted_and_its_rows_applied(seam):
    rows = [row(i) for i in range(5)]
    request = seam.put(rows)
    result = decision(seam, request)
    assert result == IngestResult(request.bundle, "accepted", "", 5, {})
    assert seam.households() == {r["id"]: r["head"] for r in rows}


def test_rows_the_service_will_not_take_come_back_refused_with_why(seam):
    rows = [row(0), row(1, members="many"), row(2), row(3, colour="red"), row(4)]
    result = decision(seam, seam.put(rows))
    assert result.state == "accepted" and result.accepted == 3
    assert set(result.refused) == {rows[1]["id"], rows[3]["id"]}
    assert "members" in result.refused[rows[1]["id"]]
    assert "colour" in result.refused[rows[3]["id"]]
    assert set(seam.households()) == {rows[0]["id"], rows[2]["id"], rows[4]["id"]}


def _altered(seam: Seam, request: IngestRequest) -> IngestRequest:
    return attrs.evolve(request, sha256=hashlib.sha256(b"other bytes").hexdigest())


def _missing(seam: Seam, request: IngestRequest) -> IngestRequest:
    return attrs.evolve(request, key=f"bundles/{ME.installation_id}/nothing-here.ndjson.gz")


def _longer(seam: Seam, request: IngestRequest) -> IngestRequest:
    return attrs.evolve(request, size=request.size + 1)


def _miscounted(seam: Seam, request: IngestRequest) -> IngestRequest:
    return attrs.evolve(request, count=request.count + 1)


def _elsewhere(seam: Seam, request: IngestRequest) -> IngestRequest:
    return attrs.evolve(request, key=f"elsewhere/{request.bundle}.ndjson.gz")


def _not_a_bundle(seam: Seam, request: IngestRequest) -> IngestRequest:
    data = b"not gzip at all" * 10
    key = f"bundles/{ME.installation_id}/junk.ndjson.gz"
    seam.blobs.put(key, io.BytesIO(data))
    return attrs.evolve(request, key=key, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def _unknown_collection(seam: Seam, request: IngestRequest) -> IngestRequest:
    return attrs.evolve(request, collection="payroll")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        pytest.param(_altered, "SHA-256 differs", id="altered"),
        pytest.param(_missing, "no bundle at", id="missing"),
        pytest.param(_longer, "the request says", id="longer"),
        pytest.param(_miscounted, "another count", id="miscounted"),
        pytest.param(_elsewhere, "taken from bundles/ only", id="elsewhere"),
        pytest.param(_not_a_bundle, "not a readable bundle", id="not-a-bundle"),
        pytest.param(_unknown_collection, "not a collection this service takes", id="unknown"),
    ],
)
def test_a_damaged_or_mismatched_bundle_is_rejected_with_why_and_nothing_applied(
    seam, damage, says
):
    request = damage(seam, seam.put([row(i) for i in range(3)]))
    result = decision(seam, request)
    assert result.state == "rejected" and says in result.reason, result
    assert result.accepted == 0 and not result.refused
    assert seam.households() == {}


def test_asking_again_answers_what_was_recorded_and_changes_nothing(seam):
    request = seam.put([row(i) for i in range(4)] + [row(9, members="many")])
    first = decision(seam, request)
    assert first.state == "accepted" and first.accepted == 4 and len(first.refused) == 1
    before = seam.stored()
    for _ in range(3):  # answers lost, and the device asks again
        assert ask(seam.service, request) == first
        seam.work()
    assert seam.stored() == before


def test_a_request_sent_again_before_its_answer_is_applied_once(seam):
    rows = [row(i) for i in range(6)]
    request = seam.put(rows)
    answers = [ask(seam.service, request) for _ in range(3)]  # each answer lost
    assert {a.state for a in answers} <= {"pending", "accepted"}
    result = decision(seam, request)
    assert result == IngestResult(request.bundle, "accepted", "", 6, {})
    assert list(seam.remote.all_docs(QUEUE)) == [request.bundle]
    versions = {i: d.version for i, d in seam.remote.all_docs("households").items()}
    seam.work()
    assert ask(seam.service, request) == result
    assert {i: d.version for i, d in seam.remote.all_docs("households").items()} == versions


def test_a_rejected_bundle_stays_rejected_when_asked_again(seam):
    request = _altered(seam, seam.put([row(1)]))
    first = decision(seam, request)
    assert first.state == "rejected"
    seam.work()
    assert ask(seam.service, request) == first
    assert seam.households() == {}


def test_a_bundle_id_reused_with_other_content_is_never_applied(seam):
    original = seam.put([row(i) for i in range(3)], bundle="reused")
    first = decision(seam, original)
    assert first.state == "accepted"
    before = seam.stored()
    forged = seam.put([row(i, head="forged") for i in range(3)], bundle="reused")
    assert (forged.key, forged.sha256) != (original.key, original.sha256)
    answer = decision(seam, forged)
    assert seam.stored() == before  # nothing of the second content applied
    # what the answer says is not part of the promise, and the two differ: the HTTP
    # service refuses the request, the queue answers what it recorded for the first
    if seam.name == "http":
        assert answer.state == "rejected" and "already sent" in answer.reason
    else:
        assert answer == first


def test_an_unreachable_service_raises_a_retryable_offline_error(seam):
    request = seam.put([row(1)])
    with pytest.raises(OfflineError) as info:
        seam.unreachable().submit(request, ME)
    assert info.value.retryable
    assert decision(seam, request).state == "accepted"  # once reachable, it goes on


def test_a_busy_service_raises_a_retryable_transient_error_and_decides_later(seam):
    request = seam.put([row(i) for i in range(3)])
    impatient = seam.impatient()
    with locked(seam.path), pytest.raises(TransientError) as info:
        impatient.submit(request, ME)
    assert info.value.retryable
    assert decision(seam, request) == IngestResult(request.bundle, "accepted", "", 3, {})


def test_a_refusal_of_the_request_itself_raises_a_remote_error_that_is_not_retryable(seam):
    request = seam.put([row(1)])
    with pytest.raises(RemoteError) as info:
        seam.refusing().submit(request, ME)
    assert not isinstance(info.value, OfflineError | TransientError)
    assert not info.value.retryable
    assert seam.stored() == {}  # nothing recorded, nothing applied
