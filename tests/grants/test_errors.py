"""What a device meets on the way to S3 or the service is always one of replicator's
errors, never httpx's or botocore's: a network that breaks (a real TCP proxy in front
of SeaweedFS), a busy S3, a service that is down, set up wrong or talking nonsense."""

from __future__ import annotations

import io
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import botocore
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import CredentialRetrievalError

from replicator import ConfigurationError, OfflineError, RemoteError, TransientError
from replicator.grants import Signer
from replicator.stores.granted import GrantedBlobStore
from replicator.testing import FaultProxy, free_port
from replicator.testing.grants import SERVICE


def _uid() -> str:
    return "u" + os.urandom(6).hex()


def _client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=SERVICE.access_key,
        aws_secret_access_key=SERVICE.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )


def test_a_network_that_breaks_is_offline_error(granted_storage):
    port = int(granted_storage.seaweed.endpoint.rsplit(":", 1)[1])
    proxy = FaultProxy(port).start()
    client = _client(f"http://{proxy.host}")  # the grants name the proxy, as S3's address
    signer = Signer(client, granted_storage.bucket)
    try:
        with granted_storage.serve(signer) as server:
            store = GrantedBlobStore(server.base_url, granted_storage.tokens(_uid()), timeout=5)
            data = os.urandom(3 << 20)
            store.put("big.bin", io.BytesIO(data))
            # (a reset mid-answer is OfflineError, or TransientError when the read
            # times out first: either way typed and retryable)
            proxy.reset_after(200_000)
            with pytest.raises((OfflineError, TransientError)) as broken:
                store.get("big.bin", io.BytesIO())
            assert broken.value.retryable
            proxy.reset_after(100_000)  # (set first: S3 may send it all before a read)
            with pytest.raises((OfflineError, TransientError)) as broken:
                stream = store.open("big.bin")
                try:
                    while stream.read(65536):
                        pass
                finally:
                    stream.close()
            assert broken.value.retryable
            proxy.mode = "refuse"
            for call in (
                lambda: store.head("big.bin"),
                lambda: store.list(""),
                lambda: store.put("x", io.BytesIO(b"x")),
                lambda: store.delete("big.bin"),
            ):
                with pytest.raises(OfflineError) as caught:
                    call()
                assert caught.value.retryable
            store.close()
    finally:
        proxy.stop()


class _BusyS3(BaseHTTPRequestHandler):
    """An S3 that answers every request 503 SlowDown, asking for 3 s."""

    def _busy(self) -> None:
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your rate</Message></Error>"
        self.send_response(503)
        self.send_header("Retry-After", "3")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = _busy

    def log_message(self, *args: object) -> None:
        pass


def test_a_busy_s3_is_transient_error_with_its_delay(granted_storage):
    busy = ThreadingHTTPServer(("127.0.0.1", 0), _BusyS3)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    signer = Signer(_client(f"http://127.0.0.1:{busy.server_port}"), granted_storage.bucket)
    try:
        with granted_storage.serve(signer) as server:
            store = GrantedBlobStore(server.base_url, granted_storage.tokens(_uid()))
            for call in (
                lambda: store.put("x", io.BytesIO(b"x")),
                lambda: store.get("x", io.BytesIO()),
                lambda: store.head("x"),
                lambda: store.list(""),
                lambda: store.delete("x"),
            ):
                with pytest.raises(TransientError) as caught:
                    call()
                assert caught.value.retryable
            with pytest.raises(TransientError) as caught:
                store.get("x", io.BytesIO())
            assert caught.value.retry_after == 3
            store.close()
    finally:
        busy.shutdown()
        busy.server_close()


class _NoCredentialsNow:
    """A service client whose credentials cannot be fetched now (the instance metadata
    service out of reach), as botocore reports it."""

    def generate_presigned_url(self, *args: object, **kwargs: object) -> str:
        raise CredentialRetrievalError(provider="iam-role", error_msg="timed out")


def test_the_service_down_or_failing_is_offline_or_transient(granted_storage):
    tokens = granted_storage.tokens(_uid())
    with pytest.raises(OfflineError):
        GrantedBlobStore(f"http://127.0.0.1:{free_port()}", tokens).head("x")
    with granted_storage.serve(Signer(_NoCredentialsNow(), "b")) as server:
        with pytest.raises(TransientError) as caught:
            GrantedBlobStore(server.base_url, tokens).head("x")
        assert "503" in str(caught.value)
    sigv2 = boto3.client(  # boto3's default for a custom endpoint in us-east-1: SigV2 URLs
        "s3",
        endpoint_url=granted_storage.seaweed.endpoint,
        region_name="us-east-1",
        aws_access_key_id=SERVICE.access_key,
        aws_secret_access_key=SERVICE.secret_key,
    )
    with pytest.raises(ConfigurationError) as caught:  # refused at start-up
        Signer(sigv2, "b")
    assert "s3v4" in str(caught.value)
    unsigned = boto3.client(
        "s3",
        endpoint_url=granted_storage.seaweed.endpoint,
        region_name="us-east-1",
        config=Config(signature_version=botocore.UNSIGNED),
    )
    with pytest.raises(ConfigurationError):
        Signer(unsigned, "b")
    # a client that signs SigV4 at start-up and SigV2 later: each grant fails closed
    drifting = _Drifting(granted_storage.service_client, sigv2)
    with granted_storage.serve(Signer(drifting, "b")) as server:
        with pytest.raises(TransientError) as caught:
            GrantedBlobStore(server.base_url, tokens).head("x")
        assert "500" in str(caught.value)


class _Drifting:
    """Signs with ``first`` once, then with ``then``."""

    def __init__(self, first, then) -> None:
        self.clients = [first, then]

    def generate_presigned_url(self, *args, **kwargs) -> str:
        client = self.clients.pop(0) if len(self.clients) > 1 else self.clients[0]
        return client.generate_presigned_url(*args, **kwargs)


def test_a_service_that_talks_nonsense_is_remote_error(granted_storage):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/storage/sign":
            return httpx.Response(200, json={"requests": [{"method": "GET", "url": "file:///"}]})
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(answer))
    store = GrantedBlobStore("http://service", granted_storage.tokens(_uid()), client=client)
    with pytest.raises(RemoteError) as caught:
        store.head("x")
    assert "nonsense" in str(caught.value)


def test_if_match_on_a_missing_key_is_precondition_failed_on_both_servers(
    granted_storage, moto_server
):
    """SeaweedFS answers 412, moto 404: both mean "not met" to a conditional write."""
    from replicator import PreconditionFailed

    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )
    bucket = "b" + os.urandom(6).hex()
    client.create_bucket(Bucket=bucket)
    stores = [granted_storage.store(_uid())]
    with granted_storage.serve(Signer(client, bucket)) as server:
        stores.append(GrantedBlobStore(server.base_url, granted_storage.tokens(_uid())))
        for store in stores:
            with pytest.raises(PreconditionFailed):
                store.put("manifest.json", io.BytesIO(b"x"), if_match='"0123456789abcdef"')
            assert store.head("manifest.json") is None
            store.close()
