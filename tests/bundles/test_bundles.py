"""Bundle upload and ingest, on real stores: a collector's offline
registrations go up as checksummed bundles, a real ingestor (HTTP, or polling the
store's queue) verifies and applies them, and a supervisor sees them by normal sync.
Attacked: tampered, truncated, replayed and mismatched bundles, lost answers, rows
changed while their bundle is in flight, invalid rows, two ingestors at once."""

from __future__ import annotations

import gzip
import io
import threading
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    IngestRequest,
    OfflineError,
    Replicator,
    StoreIngest,
    SyncModel,
)
from replicator.bundles.format import read_bundle
from replicator.stores.ingest import QUEUE
from tests.campaign_models import MODELS, REFERENCE, Household


class Campaign:
    """One campaign's pieces: a remote, a bucket, an ingest service, devices."""

    def __init__(self, tmp_path: Path, remote: Any, blobs: Any) -> None:
        self.tmp = tmp_path
        self.remote = remote
        self.blobs = blobs
        self.opened: list[Replicator] = []

    def ingestor(self, name: str = "one", **kw: Any) -> Ingestor:
        return Ingestor(self.blobs, self.remote, [Household], name=name, **kw)

    def collector(self, name: str, service: Any, **kw: Any) -> Replicator:
        return self._device(
            name,
            bundles=Bundles(self.blobs, service, [Household], **kw),
            download_only=REFERENCE,
        )

    def supervisor(self, name: str = "supervisor") -> Replicator:
        return self._device(name, download_only=REFERENCE)

    def _device(self, name: str, **kw: Any) -> Replicator:
        db = peewee.SqliteDatabase(str(self.tmp / f"{name}.db"), pragmas={"foreign_keys": 1})
        device = Replicator(db, MODELS, self.remote, device_name=name, **kw)
        self.opened.append(device)
        return device

    def close(self) -> None:
        for device in self.opened:
            device.database.close()


@pytest.fixture
def campaign(tmp_path: Path, remote: Any, blobs: Any) -> Any:
    c = Campaign(tmp_path, remote, blobs)
    yield c
    c.close()


@pytest.fixture
def local_campaign(tmp_path: Path) -> Any:
    """The fast variant: embedded remote, directory bucket."""
    c = Campaign(
        tmp_path, EmbeddedRemote(tmp_path / "remote.db"), DirectoryBlobStore(tmp_path / "b")
    )
    yield c
    c.close()


def register(device: Replicator, n: int, village: str = "north") -> list[str]:
    with device.bound():
        rows = [{"head": f"head {i}", "members": 1 + i % 7, "village": village} for i in range(n)]
        Household.insert_many(rows).execute()
        return [h.id for h in Household.select(Household.id).where(Household.village == village)]


def remote_households(campaign: Campaign) -> dict[str, str]:
    sup = campaign.supervisor(f"check{len(campaign.opened)}")
    sup.sync()
    with sup.bound():
        return {h.id: h.head for h in Household.select()}


def unsynced(device: Replicator) -> int:
    return device.database.execute_sql(
        'SELECT count(*) FROM households WHERE "isDirty" = 1'
    ).fetchone()[0]


# -- the whole flow, on every store ----------------------------------------------------------


def test_offline_registrations_reach_the_supervisor_through_concurrent_ingestors(campaign):
    collector = campaign.collector("collector", StoreIngest(campaign.remote), max_rows=400)
    ids = register(collector, 1500)
    report = collector.sync()
    assert report.bundles_waiting == 4 and unsynced(collector) == 1500
    assert not any(report.bundled.values())

    # two ingestors work the same queue at once; every bundle is decided exactly once
    one, two = campaign.ingestor("one"), campaign.ingestor("two")
    decided: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: decided.extend(i.poll())) for i in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.state for r in decided) == ["accepted"] * 4
    assert len({r.bundle for r in decided}) == 4

    report = collector.sync()
    assert report.bundled == {"households": 1500} and unsynced(collector) == 0
    assert "bundled 1,500 households;" in report.summary()
    assert set(remote_households(campaign)) == set(ids)
    with collector.bound():
        assert {h.server_id for h in Household.select()} == set(ids)  # serverId: confirmed


def test_http_ingest_marks_rows_synced_in_the_same_sync(campaign):
    with campaign.ingestor().serve() as server:
        collector = campaign.collector("collector", HttpIngest(server.url), max_rows=300)
        ids = register(collector, 700)
        report = collector.sync()
    assert report.bundled == {"households": 700} and report.bundles_waiting == 0
    assert unsynced(collector) == 0
    assert set(remote_households(campaign)) == set(ids)
    # the bundles are in the bucket, under bundles/<device>/, with their checksums
    keys = campaign.blobs.list("bundles/")
    assert len(keys) == 3 and all(
        k.key.startswith(f"bundles/{collector.installation_id}/") for k in keys
    )


# -- damaged, replayed, mismatched ------------------------------------------------------------


def _queued(collector: Replicator, campaign: Campaign) -> str:
    """Sync the collector (queue mode) and return its one bundle's key."""
    report = collector.sync()
    assert report.bundles_waiting == 1
    (info,) = campaign.blobs.list("bundles/")
    return str(info.key)


@pytest.mark.parametrize(
    "damage",
    ["flip", "truncate", "append", "swap_for_other_bundle", "delete", "header_count"],
)
def test_a_damaged_bundle_is_rejected_whole_and_its_rows_go_again(local_campaign, damage):
    c = local_campaign
    collector = c.collector("collector", StoreIngest(c.remote))
    register(collector, 50)
    key = _queued(collector, c)
    data = _read(c.blobs, key)
    if damage == "flip":
        data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "append":
        data += b"\x00trailing"
    elif damage == "header_count":  # a well-formed bundle whose header lies (re-hashed)
        header, rows = read_bundle(data)
        data = _bundle({**header, "count": 49}, rows[:49])
    elif damage == "swap_for_other_bundle":
        header, rows = read_bundle(data)
        data = _bundle({**header, "bundle": "someone-else"}, rows)
    if damage == "delete":
        c.blobs.delete(key)
    else:
        c.blobs.put(key, io.BytesIO(data))
    (result,) = c.ingestor().poll()
    assert result.state == "rejected" and result.reason
    assert remote_households(c) == {}  # nothing of it applied

    report = collector.sync()  # learns of the rejection; the rows go in a new bundle
    assert report.bundles_rejected and "rejected" in report.summary()
    assert unsynced(collector) == 50
    report = collector.sync()
    assert report.bundles_waiting == 1
    (result,) = c.ingestor("two").poll()
    assert result.state == "accepted" and result.accepted == 50
    assert collector.sync().bundled == {"households": 50}
    assert len(remote_households(c)) == 50


def _read(blobs: Any, key: str) -> bytes:
    buf = io.BytesIO()
    blobs.get(key, buf)
    return buf.getvalue()


def _bundle(header: dict[str, Any], rows: list[Any]) -> bytes:
    from replicator.codec import encode_json

    lines = [encode_json(header)] + [encode_json(r) for r in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_a_replayed_or_reused_request_is_never_applied_twice(local_campaign):
    c = local_campaign
    ingestor = c.ingestor()
    with ingestor.serve() as server:
        sent: list[IngestRequest] = []
        service = HttpIngest(server.url)
        real = service.submit

        def spy(request: Any, device: Any) -> Any:
            sent.append(request)
            return real(request, device)

        service.submit = spy  # type: ignore[method-assign]
        collector = c.collector("collector", service)
        register(collector, 20)
        collector.sync()
        (request,) = sent
        writes = c.remote.usage.writes
        again = HttpIngest(server.url).submit(request)  # a replay: the recorded answer
        assert again.state == "accepted" and again.accepted == 20
        assert c.remote.usage.writes == writes  # nothing written again
        # the same bundle id with other content is refused, and changes nothing
        forged = IngestRequest(**{**request.to_json(), "sha256": "0" * 64})
        assert HttpIngest(server.url).submit(forged).state == "rejected"
        assert c.remote.usage.writes == writes


def test_a_lost_answer_is_asked_again_and_applied_once(local_campaign):
    c = local_campaign
    with c.ingestor().serve() as server:
        service = HttpIngest(server.url)
        real = service.submit
        lost = [True]

        def drop_answer(request: Any, device: Any) -> Any:
            result = real(request, device)
            if lost.pop() if lost else False:
                raise OfflineError("the answer was lost")
            return result

        service.submit = drop_answer  # type: ignore[method-assign]
        collector = c.collector("collector", service)
        register(collector, 30)
        with pytest.raises(OfflineError):
            collector.sync()
        assert unsynced(collector) == 30  # not marked synced without an answer
        report = collector.sync()
    assert report.bundled == {"households": 30} and unsynced(collector) == 0
    docs = c.remote.all_docs(QUEUE)
    assert len(docs) == 1  # one bundle, not a second one for the same rows
    assert len(remote_households(c)) == 30


def test_a_row_changed_while_its_bundle_is_in_flight_stays_dirty_and_goes_again(local_campaign):
    c = local_campaign
    collector = c.collector("collector", StoreIngest(c.remote))
    ids = register(collector, 10)
    collector.sync()
    with collector.bound():
        Household.update(head="renamed").where(Household.id == ids[3]).execute()
    c.ingestor().poll()
    report = collector.sync()
    assert report.bundled == {"households": 9}  # the changed row is not marked synced
    assert unsynced(collector) == 1
    report = collector.sync()  # the changed row went in a new bundle
    c.ingestor().poll()
    collector.sync()
    assert unsynced(collector) == 0
    assert remote_households(c)[ids[3]] == "renamed"


def test_invalid_rows_are_refused_with_a_reason_and_the_rest_accepted(local_campaign):
    c = local_campaign
    with c.ingestor().serve() as server:
        collector = c.collector("collector", HttpIngest(server.url))
        ids = register(collector, 5)
        # an app bug wrote text into the integer column, behind peewee's back
        collector.database.execute_sql(
            "UPDATE households SET members = 'many' WHERE id = ?", (ids[0],)
        )
        report = collector.sync()
        assert report.bundled == {"households": 4} and report.refused == {"households": 1}
        assert "the ingest service refused 1 household;" in report.summary()
        (refused,) = collector.refused(Household)
        assert refused[0] == ids[0] and "members" in refused[1]
        assert unsynced(collector) == 0  # not sent again and again
        again = collector.sync()
        assert not again.bundled and not again.bundles_waiting and not again.refused
        # fixed by the app: sent again, accepted, the refusal forgotten
        with collector.bound():
            Household.update(members=3).where(Household.id == ids[0]).execute()
        assert collector.sync().bundled == {"households": 1}
        assert collector.refused(Household) == []
    assert len(remote_households(c)) == 5


def test_without_the_service_the_sync_fails_fast_and_the_next_one_picks_up(local_campaign):
    c = local_campaign
    ingestor = c.ingestor()
    server = ingestor.serve()
    url = server.url
    server.close()  # the campaign service is down
    collector = c.collector("collector", HttpIngest(url, timeout=2))
    register(collector, 10)
    with pytest.raises(OfflineError):
        collector.sync()
    assert unsynced(collector) == 10
    with ingestor.serve() as again:
        collector.bundles.service.url = again.url  # type: ignore[union-attr]
        assert collector.sync().bundled == {"households": 10}


def test_upload_only_rows_are_never_pushed_row_by_row_nor_downloaded(local_campaign):
    c = local_campaign
    collector = c.collector("collector", StoreIngest(c.remote))
    register(collector, 5)
    collector.sync()
    assert c.remote.all_docs("households") == {}  # only the ingestor writes them
    c.ingestor().poll()
    other = c.collector("other", StoreIngest(c.remote))
    other.sync()
    with other.bound():
        assert Household.select().count() == 0  # another collector does not get them


def test_an_ingestor_that_died_holding_a_claim_is_taken_over_after_its_lease(local_campaign):
    c = local_campaign
    collector = c.collector("collector", StoreIngest(c.remote))
    register(collector, 8)
    collector.sync()
    now = [1000.0]
    dead = c.ingestor("dead", clock=lambda: now[0], lease=60)
    (doc,) = c.remote.all_docs(QUEUE).values()
    from replicator.stores.base import Write

    c.remote.push([Write(QUEUE, doc.id, dead._claim(), base_version=doc.version)], dead.device)
    alive = c.ingestor("alive", clock=lambda: now[0], lease=60)
    assert alive.poll() == []  # held by the dead one
    now[0] += 61
    (result,) = alive.poll()
    assert result.state == "accepted" and result.accepted == 8


def test_ten_thousand_registrations_through_s3_and_firestore(tmp_path, firestore_client, s3_blobs):
    """The issue's scenario at its size: 10,000 offline registrations, moto's S3 server,
    the Firestore emulator, two ingestors at once, a supervisor's normal sync. (On moto
    only: its size is about Firestore and the ingestors' claims; the bundles' S3 traffic
    runs on SeaweedFS in the campaign tests above, and a second run cost a minute.)"""
    from tests.helpers import make_firestore_remote

    c = Campaign(tmp_path, make_firestore_remote(firestore_client), s3_blobs)
    try:
        collector = c.collector("collector", StoreIngest(c.remote), max_rows=2500)
        ids = register(collector, 10_000)
        assert collector.sync().bundles_waiting == 4
        ingestors = [c.ingestor("one"), c.ingestor("two")]
        decided: list[Any] = []
        threads = [threading.Thread(target=lambda i=i: decided.extend(i.poll())) for i in ingestors]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.accepted for r in decided) == [2500] * 4
        assert collector.sync().bundled == {"households": 10_000}
        assert set(remote_households(c)) == set(ids)
    finally:
        c.close()


def test_deleting_an_upload_only_row_stays_local_and_leaves_nothing_pending(local_campaign):
    c = local_campaign
    with c.ingestor().serve() as server:
        collector = c.collector("collector", HttpIngest(server.url))
        ids = register(collector, 3)
        with collector.bound():
            Household.delete_by_id(ids[0])  # before it was ever sent
        assert collector.sync().bundled == {"households": 2}
        with collector.bound():
            Household.delete_by_id(ids[1])  # after
        collector.sync()
        assert collector.pending_count() == 0
    assert set(remote_households(c)) == {ids[1], ids[2]}


class HouseholdV2(Household):
    """The app's next version: a column the service does not know yet."""

    phone = peewee.TextField(default="")

    class Meta:
        table_name = "households"


class HouseholdV0(SyncModel):
    """The app's previous version: no village column yet."""

    head = peewee.TextField()
    members = peewee.IntegerField(default=1)

    class Meta:
        table_name = "households"


def test_a_newer_app_version_waits_for_the_service_and_an_older_one_is_filled_in(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    blobs = DirectoryBlobStore(tmp_path / "bucket")
    old_service = Ingestor(blobs, remote, MODELS, name="v1")

    def collector(name: str, model: Any, service: Any) -> Replicator:
        db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"))
        return Replicator(db, [model], remote, bundles=Bundles(blobs, service, [model]))

    newer = collector("newer", HouseholdV2, StoreIngest(remote))
    with newer.bound():
        HouseholdV2.create(head="n", phone="+258")
    newer.sync()
    (result,) = old_service.poll()
    assert result.state == "rejected" and "upgrade the service" in result.reason
    assert newer.sync().bundles_rejected and newer.pending_count() == 1  # kept, sent again
    newer.sync()
    upgraded = Ingestor(blobs, remote, [HouseholdV2], name="v2")
    assert [r.state for r in upgraded.poll()] == ["accepted"]
    assert newer.sync().bundled == {"households": 1}

    older = collector("older", HouseholdV0, StoreIngest(remote))
    with older.bound():
        old_id = HouseholdV0.create(head="o", members=3).id
    older.sync()
    assert [r.state for r in upgraded.poll()] == ["accepted"]
    stored = remote.all_docs("households")[old_id].data
    assert stored["village"] == "" and stored["phone"] == "" and stored["members"] == 3


def test_bundles_go_to_s3_with_the_checksum_header_the_bucket_verifies(
    tmp_path, any_s3_blobs, request
):
    """moto neither keeps nor verifies the checksum (S3 and SeaweedFS do): the header the
    request carries is checked here, and the refusal of a damaged body maps to
    BlobIntegrityError (on SeaweedFS, a real refusal of a header that does not match)."""
    import base64
    import hashlib

    from botocore.exceptions import ClientError

    from replicator import BlobIntegrityError

    s3_blobs = any_s3_blobs
    sent: list[dict[str, str]] = []
    s3_blobs.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **kw: sent.append(dict(request.headers))
    )
    c = Campaign(tmp_path, EmbeddedRemote(tmp_path / "remote.db"), s3_blobs)
    try:
        collector = c.collector("collector", StoreIngest(c.remote))
        register(collector, 5)
        collector.sync()
    finally:
        c.close()
    (info,) = s3_blobs.list("bundles/")
    body = _read(s3_blobs, info.key)
    want = base64.b64encode(hashlib.sha256(body).digest()).decode()
    got = [h.get("x-amz-checksum-sha256") for h in sent]
    assert [g.decode() if isinstance(g, bytes) else g for g in got] == [want]
    refusal = ClientError({"Error": {"Code": "BadDigest"}}, "PutObject")
    assert isinstance(s3_blobs._translate(refusal, "k"), BlobIntegrityError)
    # a body that does not match its checksum header: SeaweedFS refuses it (BadDigest)
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    on_seaweed = request.node.callspec.params["any_s3_blobs"] == "seaweedfs"
    try:
        s3_blobs.client.put_object(
            Bucket=s3_blobs.bucket, Key="damaged", Body=body, ChecksumSHA256=wrong
        )
        assert not on_seaweed  # moto takes it: it checks no checksum
    except ClientError as exc:
        assert on_seaweed and isinstance(s3_blobs._translate(exc, "k"), BlobIntegrityError)


def test_a_long_bundle_upload_reports_progress_to_its_total(local_campaign):
    c = local_campaign
    seen: list[Any] = []
    collector = c.collector("collector", StoreIngest(c.remote), max_rows=100)
    collector.on_progress = seen.append
    register(collector, 350)
    collector.sync()
    steps = [
        (p.done, p.total) for p in seen if p.phase == "upload" and p.collection == "households"
    ]
    assert steps == [(100, 350), (200, 350), (300, 350), (350, 350)]


def test_refusals_travel_through_the_queue_on_every_store(campaign):
    """The refused rows and their reasons are recorded in the queue document (a list of
    maps on Firestore) and read back by the device."""
    collector = campaign.collector("collector", StoreIngest(campaign.remote))
    ids = register(collector, 4)
    collector.database.execute_sql("UPDATE households SET members = 'x' WHERE id = ?", (ids[2],))
    collector.sync()
    (result,) = campaign.ingestor().poll()
    assert result.accepted == 3 and list(result.refused) == [ids[2]]
    report = collector.sync()
    assert report.bundled == {"households": 3} and report.refused == {"households": 1}
    (refused,) = collector.refused(Household)
    assert refused[0] == ids[2] and "members" in refused[1]


def test_a_bundle_put_again_is_recognised_and_other_bytes_under_its_key_are_not(blobs):
    import hashlib
    import io

    from replicator.bundles.format import put_once

    data, other = b"bundle" * 100, b"other" * 100
    sha = hashlib.sha256(data).hexdigest()
    assert put_once(blobs, "bundles/d/b1", io.BytesIO(data), sha)
    assert put_once(blobs, "bundles/d/b1", io.BytesIO(data), sha)  # a retry: same bytes
    blobs.put("bundles/d/b2", io.BytesIO(other))
    assert not put_once(blobs, "bundles/d/b2", io.BytesIO(data), sha)
    assert _read(blobs, "bundles/d/b2") == other  # left as it was
