"""The manifest swap under lost answers, both answers for "precondition failed", denied
clean-ups and lost races (docs/notes/manifest-swap.md), on a directory, moto's S3 and
SeaweedFS. A lost answer is made for real where it can be: a TCP proxy resets the
connection as the server answers the manifest write, and boto3's own retry meets 412."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

from replicator import AccessDeniedError, EmbeddedRemote, OfflineError, TransientError
from replicator.snapshots import publish
from replicator.snapshots.manifest import MANIFEST, read_current, read_manifest
from replicator.snapshots.restore import database_file
from replicator.snapshots.write import write_snapshot
from replicator.strategies.snapshot import Never
from tests.helpers import snapshot_rows
from tests.snapshots.test_snapshots import KEY, fill


@pytest.fixture
def remote(tmp_path):
    """The swap is the blob store's business: the remote is the embedded one."""
    return EmbeddedRemote(tmp_path / "remote.db")


def snap_objects(blobs: Any) -> set[str]:
    return {i.key for i in blobs.list("snapshots/") if i.key.endswith(".snap")}


def assert_clean(blobs: Any) -> Any:
    """The manifest names an object that is there, and no other snapshot object is left."""
    manifest = read_manifest(blobs, KEY)
    assert snap_objects(blobs) == {f"snapshots/{s}.snap" for s in manifest.history}
    return manifest


def registered_generation(device: Any, remote: Any) -> int | None:
    (me,) = [d for d in remote.devices() if d.installation_id == device.installation_id]
    return me.snapshot_generation


class _Faulty:
    """The real blob store, with one scripted fault on the next manifest write:
    ``"lost-then-412"`` (it lands, the answer is lost, the client's retry is refused),
    ``"lost-offline"`` (it lands, then no answer at all), ``"before"`` (a hook runs
    first: another device publishes, or the manifest disappears)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.faults: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, source: Any, **kw: Any) -> Any:
        if key != MANIFEST or not self.faults:
            return self.inner.put(key, source, **kw)
        fault = self.faults.pop(0)
        if callable(fault):
            fault()
            return self.inner.put(key, source, **kw)
        body = source.read()
        self.inner.put(key, io.BytesIO(body), **kw)  # it lands
        if fault == "lost-offline":
            raise OfflineError("injected: the answer to the manifest write was lost")
        return self.inner.put(key, io.BytesIO(body), **kw)  # the retry: refused


@pytest.mark.parametrize("fault", ["lost-then-412", "lost-offline"])
def test_a_manifest_write_whose_answer_was_lost_is_a_publish(make_device, blobs, remote, fault):
    faulty = _Faulty(blobs)
    a = make_device("a", blobs=faulty, key=KEY)
    for round_ in range(2):  # the first manifest (If-None-Match), then a swap (If-Match)
        fill(a, 3, title=f"round {round_}")
        faulty.faults.append(fault)
        report = a.sync()
        assert report.snapshot_error is None and report.snapshot is not None
        assert not faulty.faults  # the fault fired
        manifest = assert_clean(blobs)  # named, there, and never deleted
        assert manifest.snapshot_id == report.snapshot
        assert registered_generation(a, remote) == manifest.generation == round_ + 1
    b = make_device("b", blobs=blobs, key=KEY)
    assert b.login().restored == report.snapshot
    assert snapshot_rows(b) == snapshot_rows(a)


#: the interim answer to ``Expect: 100-continue``, before the server has the body
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.fixture
def proxied(seaweed: Any) -> Any:
    """An S3BlobStore whose client reaches SeaweedFS through a FaultProxy, and the proxy.
    (moto is left out: there the reset lands before the write is stored, so its retry
    succeeds and nothing is lost; the wrapper above stands in for it.)"""
    import boto3
    from botocore.config import Config

    from replicator.stores.s3 import S3BlobStore
    from replicator.testing import ADMIN, FaultProxy

    endpoint, keys = seaweed.endpoint, (ADMIN.access_key, ADMIN.secret_key)
    proxy = FaultProxy(int(endpoint.rsplit(":", 1)[1])).start()
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{proxy.host}",
        region_name="us-east-1",
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        config=Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=10),
    )
    bucket = "b" + os.urandom(6).hex()
    client.create_bucket(Bucket=bucket)
    yield S3BlobStore(bucket, prefix="users/test-user", client=client), proxy
    proxy.stop()


def test_a_reset_as_the_server_answers_the_manifest_write_is_a_publish(
    make_device, proxied, remote
):
    """The issue's case, for real: the connection drops as the server answers, boto3
    sends the write again, and the server refuses it (412: the version it names is
    gone, because the first write landed). The manifest names this snapshot: success."""
    blobs, proxy = proxied
    sends: list[str] = []

    def drop_the_answer(request: Any, **kw: Any) -> None:
        if request.method == "PUT" and request.url.split("?")[0].endswith(MANIFEST):
            sends.append(request.url)
            if len(sends) in (1, 3):  # the first try of each of the two publishes
                # past an interim "100 Continue" (boto3 sends Expect): the final answer
                proxy.reset_after(len(CONTINUE) + 1)

    blobs.client.meta.events.register("before-send.s3.PutObject", drop_the_answer)
    a = make_device("a", blobs=blobs, key=KEY)
    for round_ in range(2):
        fill(a, 3, title=f"round {round_}")
        report = a.sync()
        assert report.snapshot_error is None and report.snapshot is not None
        manifest = assert_clean(blobs)
        assert manifest.snapshot_id == report.snapshot
        assert registered_generation(a, remote) == manifest.generation
    assert len(sends) == 4 and proxy.resets == 2  # each write went twice: the retry met 412
    b = make_device("b", blobs=blobs, key=KEY)
    assert b.login().restored == report.snapshot


def test_a_manifest_gone_before_the_swap_is_decided_again_not_an_error(make_device, blobs):
    """If-Match on a missing manifest: S3 says 412, moto 404. Either way the upload is
    deleted, the device decides against no manifest, and publishes."""
    faulty = _Faulty(blobs)
    a = make_device("a", blobs=faulty, key=KEY)
    fill(a, 2)
    a.sync()
    fill(a, 2, title="more")
    faulty.faults.append(lambda: blobs.delete(MANIFEST))
    report = a.sync()
    assert report.snapshot_error is None and report.snapshot is not None
    assert not faulty.faults
    manifest = read_manifest(blobs, KEY)
    assert manifest.snapshot_id == report.snapshot
    # the first try's upload was deleted; the older snapshots are no manifest's any more
    # (and are swept once ORPHAN_AGE old): only the new one and them remain
    assert f"snapshots/{report.snapshot}.snap" in snap_objects(blobs)
    assert len(snap_objects(blobs)) == 2


class _DeniedListing:
    """The real store, except that listing is denied (as with read and write rights only)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list(self, prefix: str) -> Any:
        raise AccessDeniedError(f"injected: listing {prefix} is denied")


def test_a_denied_clean_up_still_reports_and_registers_the_publish(
    make_device, blobs, remote, caplog
):
    a = make_device("a", blobs=_DeniedListing(blobs), key=KEY)
    for round_ in range(2):
        fill(a, 2, title=f"round {round_}")
        report = a.sync()
        assert report.snapshot_error is None and report.snapshot is not None
        manifest = read_manifest(blobs, KEY)
        assert manifest.snapshot_id == report.snapshot
        assert registered_generation(a, remote) == manifest.generation == round_ + 1
    assert "not cleaned up" in caplog.text


def test_snapshot_uploads_carry_their_sha256_for_the_server_to_check(make_device, any_s3_blobs):
    import base64
    import hashlib

    blobs = any_s3_blobs
    sent: list[tuple[Any, bytes]] = []

    def record(request: Any, **kw: Any) -> None:
        if ".snap" in request.url.split("?")[0]:
            body = request.body
            data = body.read() if hasattr(body, "read") else body
            if hasattr(body, "seek"):
                body.seek(0)
            sent.append((request.headers.get("x-amz-checksum-sha256"), bytes(data)))

    blobs.client.meta.events.register("before-send.s3.PutObject", record)
    a = make_device("a", blobs=blobs, key=KEY)
    fill(a, 5)
    assert a.sync().snapshot is not None
    ((header, body),) = sent
    header = header.decode() if isinstance(header, bytes) else header
    assert header == base64.b64encode(hashlib.sha256(body).digest()).decode()


# -- the freshest device and lost races --------------------------------------------------


def _publish_as(device: Any, blobs: Any) -> None:
    """``device`` publishes with the watermarks it holds, as its own sync's snapshot
    phase would (without the download that would make it as fresh as the others)."""
    write_snapshot(
        connection=device.database.connection(),
        db_path=database_file(device.database),
        blobs=blobs,
        key=KEY,
        watermarks=device.local.trackers(),
        seen_position=device.local.seen_position,
        device_name=device.local.device_name,
        current=read_current(blobs, KEY),
        tables=device.collections,
    )


def _staggered(make_device: Any, blobs: Any, n: int) -> tuple[list[Any], Any]:
    """A snapshot from ``first``, then ``n`` devices each fresher than the one before
    (each synced after the previous one wrote), and the freshest device last."""
    first = make_device("first", blobs=blobs, key=KEY)
    fill(first, 1, title="first")
    first.sync()
    behind = []
    for i in range(n):
        d = make_device(f"behind{i}", blobs=blobs, key=KEY, snapshot_strategy=Never())
        fill(d, 1, title=f"behind {i}")
        d.sync()
        behind.append(d)
    fresh = make_device("fresh", blobs=blobs, key=KEY, snapshot_strategy=Never())
    fill(fresh, 1, title="fresh")
    fresh.sync()
    from replicator.strategies.snapshot import BigBrother

    fresh.snapshot_strategy = BigBrother()
    return behind, fresh


def test_the_freshest_device_tries_again_while_it_is_still_the_freshest(make_device, blobs, remote):
    """Two less fresh devices, each fresher than the manifest, win the swap right before
    the freshest device twice: it tries a third time and its snapshot is the manifest."""
    behind, fresh = _staggered(make_device, blobs, 2)
    faulty = _Faulty(blobs)
    faulty.faults = [lambda d=d: _publish_as(d, blobs) for d in behind]
    fresh.blobs = faulty
    report = fresh.sync()
    assert not faulty.faults  # both races were lost
    assert report.snapshot_error is None and report.snapshot is not None
    manifest = assert_clean(blobs)
    assert manifest.snapshot_id == report.snapshot and manifest.device_name == "fresh"
    assert manifest.generation == 4 == registered_generation(fresh, remote)
    c = make_device("c", blobs=blobs, key=KEY)
    c.login()
    assert snapshot_rows(c) == snapshot_rows(fresh)


def test_a_freshest_device_that_loses_every_attempt_says_so(make_device, blobs):
    n = publish.PUBLISH_ATTEMPTS
    behind, fresh = _staggered(make_device, blobs, n)
    faulty = _Faulty(blobs)
    faulty.faults = [lambda d=d: _publish_as(d, blobs) for d in behind]
    fresh.blobs = faulty
    report = fresh.sync()
    assert report.snapshot is None and isinstance(report.snapshot_error, TransientError)
    assert report.snapshot_error.retryable and "sync again" in str(report.snapshot_error)
    assert read_manifest(blobs, KEY).device_name == f"behind{n - 1}"
    assert assert_clean(blobs)  # every attempt's upload was deleted again
    report = fresh.sync()  # the next sync: still the freshest, nobody races
    assert report.snapshot is not None and read_manifest(blobs, KEY).device_name == "fresh"
