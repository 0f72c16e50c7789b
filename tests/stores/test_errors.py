"""Each store maps its driver's exceptions in one place: no driver exception escapes,
what asking again cannot cure is not retryable, and an unreachable store is offline."""

from __future__ import annotations

import http.server
import io
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from replicator import (
    ConfigurationError,
    DirectoryBlobStore,
    EmbeddedRemote,
    OfflineError,
    RemoteError,
    TransientError,
)
from replicator.errors import BlobNotFoundError


def _not_retryable(exc: BaseException) -> None:
    assert isinstance(exc, RemoteError) and not exc.retryable, repr(exc)
    assert not isinstance(exc, OfflineError | TransientError), repr(exc)


# -- the embedded remote ---------------------------------------------------------------


def test_a_damaged_embedded_remote_is_not_offline(tmp_path):
    path = tmp_path / "remote.db"
    EmbeddedRemote(path)
    path.write_bytes(os.urandom(8192))
    store = EmbeddedRemote(path, create=False)
    with pytest.raises(RemoteError) as info:
        store.pull("note", None, 10)
    _not_retryable(info.value)
    assert "damaged" in str(info.value)


def test_an_embedded_remote_whose_folder_went_away_is_offline(tmp_path):
    # a share unmounted after the store worked; a folder that never existed is a
    # setup mistake instead (tests/stores/test_setup_mistakes.py)
    (tmp_path / "share").mkdir()
    store = EmbeddedRemote(tmp_path / "share" / "remote.db")
    store.pull("note", None, 10)
    (tmp_path / "share").rename(tmp_path / "unmounted")
    with pytest.raises(OfflineError) as info:
        store.pull("note", None, 10)
    assert info.value.retryable and "does not exist" in str(info.value)


# -- the directory blob store -----------------------------------------------------------


def test_directory_store_refusals_are_typed(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    (tmp_path / "blobs" / "snapshots").write_text("a file where a directory should be")
    with pytest.raises(RemoteError) as info:
        blobs.put("snapshots/a.snap", io.BytesIO(b"x"))
    _not_retryable(info.value)
    blobs.put("ok.bin", io.BytesIO(b"x"))
    (tmp_path / "blobs" / "ok.bin.meta.json").write_text("{not json")
    with pytest.raises(RemoteError, match="damaged"):
        blobs.head("ok.bin")
    with pytest.raises(ConfigurationError):
        blobs.get("../escape", io.BytesIO())
    with pytest.raises(BlobNotFoundError):
        blobs.get("missing.bin", io.BytesIO())


def test_a_directory_store_whose_directory_is_gone_is_offline(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "mnt" / "blobs")
    (tmp_path / "mnt" / "blobs").rmdir()
    for call in (
        lambda: blobs.put("a", io.BytesIO(b"x")),
        lambda: blobs.head("a"),
        lambda: blobs.list(""),
        lambda: blobs.delete("a"),
    ):
        with pytest.raises(OfflineError):
            call()


# -- S3 ---------------------------------------------------------------------------------


def test_s3_without_the_bucket_is_refused_not_retried(moto_server, monkeypatch):
    import boto3

    from replicator.stores.s3 import S3BlobStore

    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    store = S3BlobStore("no-such-bucket-" + os.urandom(4).hex(), client=client)
    # (a HEAD cannot tell a missing bucket from a missing key: it has no body)
    for call in (lambda: store.put("a", io.BytesIO(b"x")), lambda: store.list("")):
        with pytest.raises(RemoteError, match="no bucket") as info:
            call()
        _not_retryable(info.value)


class _S3Imitation(http.server.BaseHTTPRequestHandler):
    """Answers like an S3 that denies every request, or that cuts a download short."""

    mode = "deny"

    def _deny(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>"
        )
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.mode == "deny":
            return self._deny()
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(b"x" * 1000)  # then the connection drops
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    do_HEAD = do_PUT = do_DELETE = _deny

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def s3_imitation() -> Iterator[tuple[str, type[_S3Imitation]]]:
    handler = type("Handler", (_S3Imitation,), {"mode": "deny"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _client(endpoint: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, read_timeout=5, connect_timeout=5),
    )


def test_a_denied_s3_request_is_access_denied_naming_bucket_and_key(s3_imitation):
    from replicator import AccessDeniedError
    from replicator.stores.s3 import S3BlobStore

    endpoint, _ = s3_imitation
    store = S3BlobStore("bucket", prefix="users/A", client=_client(endpoint))
    for call in (
        lambda: store.put("a", io.BytesIO(b"x"), if_none_match=True),
        lambda: store.put("a", io.BytesIO(b"x"), if_match='"e"'),
        lambda: store.put("a", io.BytesIO(b"x")),
        lambda: store.head("a"),  # a HEAD's 403 has no body, only its status
        lambda: store.open("a"),
        lambda: store.get("a", io.BytesIO()),
        lambda: store.list(""),
        lambda: store.delete("a"),
    ):
        with pytest.raises(AccessDeniedError) as info:
            call()
        _not_retryable(info.value)
        assert "s3://bucket/users/A/" in str(info.value), info.value
        assert "rights on s3://bucket/users/A/*" in info.value.hint
        assert info.value.status == 403


def test_an_s3_download_cut_short_is_offline(s3_imitation):
    from replicator.stores.s3 import S3BlobStore

    endpoint, handler = s3_imitation
    handler.mode = "cut"
    store = S3BlobStore("bucket", client=_client(endpoint))
    stream = store.open("big.snap")
    with pytest.raises(OfflineError):
        while stream.read(65536):
            pass
    stream.close()


# -- Firestore --------------------------------------------------------------------------


def test_firestore_maps_every_refusal_in_one_place(firestore_client):
    from google.api_core import exceptions as gexc

    from replicator import PreconditionFailed
    from replicator.stores.firestore import FirestoreRemote

    remote = FirestoreRemote(firestore_client, root="users/errors", attempts=1)

    def raising(exc: Exception):
        def call():
            raise exc

        return call

    missing_index = gexc.FailedPrecondition("The query requires an index.")
    with pytest.raises(RemoteError, match="index") as info:
        remote._call("a read of note", raising(missing_index))
    _not_retryable(info.value)
    with pytest.raises(PreconditionFailed):
        remote._call("a commit", raising(missing_index), conditional=True)
    for refused in (gexc.PermissionDenied("rules"), gexc.Unauthenticated("token")):
        with pytest.raises(RemoteError) as info:
            remote._call("a read", raising(refused))
        _not_retryable(info.value)
    with pytest.raises(OfflineError):
        remote._call("a read", raising(gexc.ServiceUnavailable("down")))
    with pytest.raises(RemoteError):
        remote._call("a read", raising(gexc.NotFound("no database")))
