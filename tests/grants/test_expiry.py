"""A grant that expires before S3 sees it is signed again, once, without the caller
noticing: a service signing for 1 s, a device whose network stalls past that."""

from __future__ import annotations

import io
import os
import time

import httpx
import pytest

from replicator.grants import Signer
from replicator.stores.granted import GrantedBlobStore


class _Stall:
    """An httpx request hook: the next request to S3 waits ``seconds`` first."""

    def __init__(self, s3: str, seconds: float) -> None:
        self.s3, self.seconds, self.armed, self.stalled = s3, seconds, False, 0

    def __call__(self, request: httpx.Request) -> None:
        if self.armed and str(request.url).startswith(self.s3):
            self.armed = False
            self.stalled += 1
            time.sleep(self.seconds)


@pytest.fixture
def slow_device(granted_storage):
    signer = Signer(granted_storage.service_client, granted_storage.bucket, expires=1)
    stall = _Stall(granted_storage.seaweed.endpoint, 2.2)
    client = httpx.Client(event_hooks={"request": [stall]})
    with granted_storage.serve(signer) as server:
        uid = "u" + os.urandom(6).hex()
        store = GrantedBlobStore(server.base_url, granted_storage.tokens(uid), client=client)
        yield store, stall
    client.close()


def test_expired_grants_are_signed_again_transparently(slow_device):
    store, stall = slow_device
    data = os.urandom(300_000)

    def stalled(call):
        stall.armed, before = True, store.grants
        result = call()
        assert stall.stalled and store.grants - before >= 2  # the first grant expired
        stall.stalled = 0
        return result

    seen: list[int] = []
    info = stalled(lambda: store.put("a.bin", io.BytesIO(data), on_bytes=seen.append))
    assert info.size == len(data)
    out = io.BytesIO()
    assert stalled(lambda: store.get("a.bin", out)).sha256 == info.sha256
    assert out.getvalue() == data
    assert stalled(lambda: store.head("a.bin")).etag == info.etag
    assert [i.key for i in stalled(lambda: store.list(""))] == ["a.bin"]
    stream = stalled(lambda: store.open("a.bin"))
    try:
        assert stream.read() == data
    finally:
        stream.close()
    stalled(lambda: store.delete("a.bin"))
    assert store.head("a.bin") is None
