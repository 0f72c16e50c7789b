"""The BlobStore contract (stores/base.py), run against the directory store, moto's S3 and
SeaweedFS (a real S3 server)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading

import pytest

from replicator import BlobIntegrityError, PreconditionFailed
from replicator.errors import BlobNotFoundError


def test_put_get_round_trip_with_checksum(blobs):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several transfer parts
    seen = []
    info = blobs.put("snapshots/a.snap", io.BytesIO(data), on_bytes=seen.append)
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)
    out = io.BytesIO()
    got = blobs.get("snapshots/a.snap", out)
    assert out.getvalue() == data
    assert got.sha256 == info.sha256 and got.etag == blobs.head("snapshots/a.snap").etag


def test_open_streams_the_object(blobs):
    data = os.urandom(2 * 1024 * 1024 + 5)
    blobs.put("x.bin", io.BytesIO(data))
    stream = blobs.open("x.bin")
    try:
        parts = []
        while block := stream.read(65536):
            parts.append(block)
    finally:
        stream.close()
    assert b"".join(parts) == data
    with pytest.raises(BlobNotFoundError):
        blobs.open("missing.bin")


def test_missing_objects(blobs):
    assert blobs.head("nope") is None
    with pytest.raises(BlobNotFoundError):
        blobs.get("nope", io.BytesIO())
    blobs.delete("nope")  # not an error


def test_if_none_match_refuses_an_existing_key(blobs):
    blobs.put("m.json", io.BytesIO(b"one"), if_none_match=True)
    with pytest.raises(PreconditionFailed):
        blobs.put("m.json", io.BytesIO(b"two"), if_none_match=True)
    out = io.BytesIO()
    blobs.get("m.json", out)
    assert out.getvalue() == b"one"


def test_if_match_swaps_only_the_version_read(blobs):
    first = blobs.put("m.json", io.BytesIO(b"v1"))
    second = blobs.put("m.json", io.BytesIO(b"v2"), if_match=first.etag)
    assert second.etag != first.etag
    with pytest.raises(PreconditionFailed):
        blobs.put("m.json", io.BytesIO(b"stale"), if_match=first.etag)
    out = io.BytesIO()
    blobs.get("m.json", out)
    assert out.getvalue() == b"v2"


def test_if_match_on_a_missing_key_is_a_failed_precondition(blobs):
    """S3 answers 412, moto 404: both mean the version read is not there any more."""
    first = blobs.put("m.json", io.BytesIO(b"v1"))
    blobs.delete("m.json")
    with pytest.raises(PreconditionFailed):
        blobs.put("m.json", io.BytesIO(b"v2"), if_match=first.etag)
    assert blobs.head("m.json") is None


@pytest.mark.parametrize("size", [100, 9 << 20], ids=["one-put", "multipart"])
def test_every_s3_upload_carries_its_sha256(any_s3_blobs, size):
    """The server can check what it stores: one PutObject carries the object's SHA-256,
    a multipart upload each part's (S3 has no whole-object SHA-256 for multipart)."""
    blobs = any_s3_blobs
    sent: list[tuple[str, bytes]] = []

    def record(request, **kw):
        if request.method == "PUT" and request.body is not None:
            body = request.body.read() if hasattr(request.body, "read") else request.body
            if hasattr(request.body, "seek"):
                request.body.seek(0)
            sent.append((request.headers.get("x-amz-checksum-sha256"), bytes(body)))

    blobs.client.meta.events.register("before-send.s3.*", record)
    data = os.urandom(size)
    blobs.put("snapshots/x.snap", io.BytesIO(data))
    assert sum(len(body) for _, body in sent) == size  # parts may go in any order
    for header, body in sent:
        header = header.decode() if isinstance(header, bytes) else header
        assert header == base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert body in data


def test_list_and_delete(blobs):
    for name in ("snapshots/2.snap", "snapshots/1.snap", "bundles/x"):
        blobs.put(name, io.BytesIO(name.encode()))
    assert [i.key for i in blobs.list("snapshots/")] == ["snapshots/1.snap", "snapshots/2.snap"]
    blobs.delete("snapshots/1.snap")
    assert [i.key for i in blobs.list("snapshots/")] == ["snapshots/2.snap"]


def test_racing_conditional_creates_have_one_winner(blobs, request):
    wins, losses = [], []

    def racer(n):
        try:
            blobs.put("race.json", io.BytesIO(str(n).encode()), if_none_match=True)
            wins.append(n)
        except PreconditionFailed:
            losses.append(n)

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) >= 1 and len(wins) + len(losses) == 6
    if request.node.callspec.params["blobs"] != "s3":
        assert len(wins) == 1  # moto does not lock a true race (DESIGN.md); SeaweedFS does


def test_put_refuses_bytes_that_do_not_hash_to_the_announced_sha256(blobs):
    data = b"bundle bytes" * 1000
    right = hashlib.sha256(data).hexdigest()
    with pytest.raises(BlobIntegrityError):
        blobs.put("bundles/x", io.BytesIO(data), sha256="0" * 64)
    assert blobs.head("bundles/x") is None  # nothing stored
    info = blobs.put("bundles/x", io.BytesIO(data), sha256=right.upper(), if_none_match=True)
    assert info.sha256 == right and info.size == len(data)
