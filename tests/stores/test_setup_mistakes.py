"""A store pointed at the wrong place says what to fix, and never that the network is
down: a missing folder, a folder given as a file, a device's database given as the
remote, S3 without credentials or with an endpoint that is not a URL. Each is a
``ConfigurationError`` (a scheduler must not retry it for ever), with a hint, and
touches nothing."""

from __future__ import annotations

import io

import peewee
import pytest

from replicator import (
    ConfigurationError,
    DirectoryBlobStore,
    EmbeddedRemote,
    Replicator,
)
from tests.models import MODELS


def _setup_mistake(exc: BaseException, *words: str) -> None:
    assert isinstance(exc, ConfigurationError), repr(exc)
    assert not exc.retryable and exc.hint, repr(exc)
    for word in words:
        assert word in str(exc), str(exc)
    assert "network" not in str(exc), str(exc)


# -- the embedded remote ---------------------------------------------------------------


def test_an_embedded_remote_in_a_missing_folder_is_a_setup_mistake(tmp_path):
    where = tmp_path / "share" / "remote.db"
    with pytest.raises(ConfigurationError) as made:
        EmbeddedRemote(where)
    _setup_mistake(made.value, str(tmp_path / "share"), "does not exist")
    store = EmbeddedRemote(where, create=False)
    with pytest.raises(ConfigurationError) as used:
        store.pull("note", None, 10)
    _setup_mistake(used.value, "does not exist")
    assert not (tmp_path / "share").exists()


def test_a_folder_given_as_the_embedded_remote_is_a_setup_mistake(tmp_path):
    (tmp_path / "remote").mkdir()
    with pytest.raises(ConfigurationError) as made:
        EmbeddedRemote(tmp_path / "remote")
    _setup_mistake(made.value, "is a folder")
    with pytest.raises(ConfigurationError) as used:
        EmbeddedRemote(tmp_path / "remote", create=False).devices()
    _setup_mistake(used.value, "is a folder")
    assert list((tmp_path / "remote").iterdir()) == []


def test_a_missing_remote_file_is_not_created_when_only_opened(tmp_path):
    store = EmbeddedRemote(tmp_path / "remote.db", create=False)
    with pytest.raises(ConfigurationError) as info:
        store.collections()
    _setup_mistake(info.value, "does not exist")
    assert not (tmp_path / "remote.db").exists()


def test_a_device_database_given_as_the_remote_is_refused_untouched(tmp_path):
    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    Replicator(db, MODELS, EmbeddedRemote(tmp_path / "remote.db"), device_name="phone")
    db.close()
    before = (tmp_path / "phone.db").read_bytes()
    with pytest.raises(ConfigurationError) as made:
        EmbeddedRemote(tmp_path / "phone.db")  # would have added the remote's tables to it
    _setup_mistake(made.value, "phone.db", "a device's database")
    store = EmbeddedRemote(tmp_path / "phone.db", create=False)
    for call in (store.collections, store.devices, lambda: store.pull("note", None, 10)):
        with pytest.raises(ConfigurationError) as info:
            call()
        _setup_mistake(info.value, "phone.db", "not an embedded remote")
    assert (tmp_path / "phone.db").read_bytes() == before


# -- the directory blob store ------------------------------------------------------------


def test_a_directory_store_on_a_file_is_a_setup_mistake(tmp_path):
    (tmp_path / "blobs").write_text("a file, not a folder")
    with pytest.raises(ConfigurationError) as made:
        DirectoryBlobStore(tmp_path / "blobs")
    _setup_mistake(made.value, "is a file")
    store = DirectoryBlobStore(tmp_path / "blobs", create=False)
    with pytest.raises(ConfigurationError) as used:
        store.put("a", io.BytesIO(b"x"))
    _setup_mistake(used.value, "is a file")
    assert (tmp_path / "blobs").read_text() == "a file, not a folder"


def test_a_blob_directory_that_never_was_there_is_a_setup_mistake(tmp_path):
    # one that was there and went away is offline (tests/stores/test_errors.py)
    store = DirectoryBlobStore(tmp_path / "no-such-share" / "blobs", create=False)
    for call in (lambda: store.head("a"), lambda: store.put("a", io.BytesIO(b"x"))):
        with pytest.raises(ConfigurationError) as info:
            call()
        _setup_mistake(info.value, "no blob directory")
    assert not (tmp_path / "no-such-share").exists()


# -- S3 ----------------------------------------------------------------------------------


@pytest.fixture
def no_aws_credentials(tmp_path, monkeypatch):
    """An environment where boto3 finds no credentials anywhere (and never asks the
    instance metadata service, which is not on this machine)."""
    import boto3

    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches what it found


def test_s3_without_credentials_is_a_setup_mistake(no_aws_credentials):
    from replicator.stores.s3 import S3BlobStore

    # an address on this machine where nothing listens: no request gets that far
    store = S3BlobStore("bucket", endpoint_url="http://127.0.0.1:9")
    for call in (
        lambda: store.head("a"),
        lambda: store.put("a", io.BytesIO(b"x"), if_none_match=True),
        lambda: store.list(""),
    ):
        with pytest.raises(ConfigurationError) as info:
            call()
        _setup_mistake(info.value, "credentials")


def test_an_s3_profile_that_does_not_exist_is_a_setup_mistake(no_aws_credentials, monkeypatch):
    from replicator.stores.s3 import S3BlobStore

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigurationError) as info:
        S3BlobStore("bucket", endpoint_url="http://127.0.0.1:9")
    _setup_mistake(info.value, "no-such-profile")


@pytest.mark.parametrize(
    "endpoint", ["notaurl", "127.0.0.1:9000", "ftp://127.0.0.1", "http://", "http://h:99999"]
)
def test_an_s3_endpoint_that_is_not_a_url_is_a_setup_mistake(endpoint):
    from replicator.stores.s3 import S3BlobStore

    with pytest.raises(ConfigurationError) as info:
        S3BlobStore("bucket", endpoint_url=endpoint)
    _setup_mistake(info.value, repr(endpoint))


def test_a_malformed_bucket_name_is_a_setup_mistake_told_in_one_line():
    import boto3

    from replicator.stores.s3 import S3BlobStore

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    store = S3BlobStore("my bucket", client=client)
    with pytest.raises(ConfigurationError) as info:
        store.head("a")
    _setup_mistake(info.value, "bucket name")
    assert "\n" not in str(info.value)


def test_a_sync_whose_s3_store_has_no_credentials_syncs_and_reports_it(
    no_aws_credentials, tmp_path
):
    # the data is synced by then: only the snapshot is missing, told in the report
    from replicator import SnapshotKey
    from replicator.stores.s3 import S3BlobStore
    from tests.models import Note

    db = peewee.SqliteDatabase(str(tmp_path / "phone.db"))
    remote = EmbeddedRemote(tmp_path / "remote.db")
    blobs = S3BlobStore("bucket", endpoint_url="http://127.0.0.1:9")
    phone = Replicator(db, MODELS, remote, blobs, SnapshotKey(bytes(32)), device_name="phone")
    with phone.bound():
        Note.create(title="kept")
    report = phone.sync()
    assert report.uploaded == {"note": 1} and report.snapshot is None
    _setup_mistake(report.snapshot_error, "credentials")
    assert "no snapshot: ConfigurationError" in report.summary()
