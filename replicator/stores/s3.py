"""S3BlobStore: snapshots and bundles in S3 or any S3-compatible store.

Large objects stream through boto3's transfer manager (multipart, bounded
memory). Conditional writes use S3's ``If-None-Match: *`` and ``If-Match:
<etag>`` on ``PutObject``. The SHA-256 of every object is stored in its
metadata (``x-amz-meta-sha256``) and checked by readers; some S3-compatible
servers do not verify checksums themselves.

Invariants:

* every upload carries its SHA-256 for the server to check: the whole object's
  (``x-amz-checksum-sha256``) on a single ``PutObject``, each part's on a
  multipart upload (S3 has no whole-object SHA-256 for those; the object's own
  is checked here before sending and kept in its metadata);
* "precondition not met" is one error whatever the server answers: 412, 409, or
  the 404 some servers (moto) give ``If-Match`` on a missing key;
* a refusal (403: denied, a bad signature, an unknown key) is an
  ``AccessDeniedError`` naming the bucket and the full key, never retried; no
  botocore exception leaves this module.
"""

from __future__ import annotations

import base64
import contextlib
import io
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from ..errors import (
    AccessDeniedError,
    BlobIntegrityError,
    BlobNotFoundError,
    ConfigurationError,
    OfflineError,
    PreconditionFailed,
    RemoteError,
    TransientError,
)
from .base import BlobInfo, BlobStore, hash_rest

try:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConfigNotFound,
        ConfigParseError,
        CredentialRetrievalError,
        InvalidConfigError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ProfileNotFound,
        SSOError,
        TokenRetrievalError,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("S3BlobStore needs boto3: pip install 'replicator[s3]'") from exc

_BUF = 1 << 20
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_DENIED_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "403",
}
_BUSY_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "ThrottlingException"}
#: what boto3 raises for its own setup, before a request leaves: no retry can cure it
_SETUP_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    ProfileNotFound,
    ConfigNotFound,
    ConfigParseError,
    InvalidConfigError,
    NoRegionError,
    ParamValidationError,
    TokenRetrievalError,
    SSOError,
)


class S3BlobStore:
    """A :class:`~replicator.stores.base.BlobStore` on an S3 bucket, under ``prefix``.

    Pass a boto3 S3 ``client``, or let one be made with ``endpoint_url`` (for
    S3-compatible servers) and the usual AWS environment/credentials.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        multipart_threshold: int = 8 << 20,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or _client(endpoint_url)
        self.threshold = multipart_threshold
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=8 << 20, max_concurrency=4
        )

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _translate(self, exc: Exception, key: str, *, conditional: bool = False) -> Exception:
        """replicator's error for ``exc``, raised by a request on ``key``; with
        ``conditional`` (an ``If-Match`` write), a missing key is a failed precondition."""
        if isinstance(exc, _SETUP_ERRORS):
            return _setup_error(exc)
        if not isinstance(exc, ClientError):
            return OfflineError(f"cannot reach S3 for {key}: {exc}", orig=exc)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return BlobIntegrityError(f"S3 refused {key}: its bytes were damaged", orig=exc)
        if code in _PRECONDITION_CODES or status == "412":
            return PreconditionFailed(f"blob {key} changed or exists", orig=exc)
        if code == "NoSuchBucket":
            return RemoteError(
                f"there is no bucket s3://{self.bucket}",
                hint="create it, or check its name and the endpoint",
                orig=exc,
            )
        if code in _DENIED_CODES or status == "403":
            return self._denied(code or status, key, exc)
        if code in _MISSING_CODES or status == "404":
            if conditional:  # moto answers If-Match on a missing key with 404, S3 with 412
                return PreconditionFailed(f"blob {key} is gone since it was read", orig=exc)
            return BlobNotFoundError(f"no blob {key} in s3://{self.bucket}", orig=exc)
        if status.startswith("5") or code in _BUSY_CODES or status == "429":
            return TransientError(f"S3 failed on {key}: {code}", orig=exc)
        # a malformed request, an unknown refusal: asking again changes nothing
        return RemoteError(
            f"S3 refused {key} in s3://{self.bucket}: {code or status}",
            hint="check the bucket name, the credentials and the bucket's policy",
            orig=exc,
        )

    def _denied(self, code: str, key: str, exc: Exception) -> AccessDeniedError:
        """A 403: these credentials may not do this to this key (or are not valid)."""
        where = f"s3://{self.bucket}/{self._key(key)}"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            hint = "the S3 credentials are not valid here: check the access key and its secret"
        else:
            scope = f"s3://{self.bucket}/{self.prefix}/" if self.prefix else f"s3://{self.bucket}"
            hint = (
                f"give these credentials read, write and list rights on {scope}*, or point the"
                " store at the prefix they were granted; nothing local was lost"
            )
        denied = AccessDeniedError(f"S3 denied access to {where} ({code})", hint=hint, orig=exc)
        denied.status = 403
        return denied

    @contextmanager
    def _mapped(self, key: str, *, conditional: bool = False) -> Iterator[None]:
        """The one place S3's exceptions become replicator's (see ``BlobStore``)."""
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key, conditional=conditional) from exc

    def put(
        self,
        key: str,
        source: BinaryIO,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
        sha256: str | None = None,
    ) -> BlobInfo:
        spooled = None
        if not source.seekable():
            spooled = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
            while block := source.read(_BUF):
                spooled.write(block)
            source = spooled
        try:
            start = source.tell()
            digest, size = hash_rest(source, _BUF)
            source.seek(start)
            sha = digest.hexdigest()
            if sha256 is not None and sha != sha256.lower():
                raise BlobIntegrityError(
                    f"blob {key}: the bytes hash to {sha[:12]}…, not the {sha256[:12]}…"
                    " announced; nothing stored"
                )
            return self._send(key, source, digest, size, if_none_match, if_match, on_bytes)
        finally:
            if spooled is not None:
                spooled.close()

    def _send(
        self,
        key: str,
        source: BinaryIO,
        digest: Any,
        size: int,
        if_none_match: bool,
        if_match: str | None,
        on_bytes: Callable[[int], None] | None,
    ) -> BlobInfo:
        """Upload ``size`` bytes of ``source`` that hash to ``digest``: one ``PutObject``
        carrying the object's SHA-256 (conditional or small), else a multipart upload
        whose every part carries its own."""
        sha = digest.hexdigest()
        meta = {"sha256": sha}
        with self._mapped(key, conditional=if_match is not None):
            if if_none_match or if_match is not None or size < self.threshold:
                extra: dict[str, Any] = {"IfNoneMatch": "*"} if if_none_match else {}
                if if_match is not None:
                    extra["IfMatch"] = if_match
                # S3 itself refuses a body that does not hash to this (BadDigest)
                resp = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=source.read(),
                    Metadata=meta,
                    ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                    **extra,
                )
                if on_bytes is not None:
                    on_bytes(size)
                return BlobInfo(key, size, sha, resp["ETag"])
            self.client.upload_fileobj(
                source,
                self.bucket,
                self._key(key),
                ExtraArgs={"Metadata": meta, "ChecksumAlgorithm": "SHA256"},
                Callback=on_bytes,
                Config=self.transfer,
            )
        info = self.head(key)
        if info is None:
            raise TransientError(f"S3 lost {key} right after writing it")
        return info

    def head(self, key: str) -> BlobInfo | None:
        try:
            with self._mapped(key):
                resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except BlobNotFoundError:
            return None
        return BlobInfo(
            key,
            int(resp["ContentLength"]),
            resp.get("Metadata", {}).get("sha256", ""),
            resp["ETag"],
        )

    def get(
        self, key: str, dest: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
    ) -> BlobInfo:
        info = self.head(key)
        if info is None:
            raise BlobNotFoundError(f"no blob {key} in s3://{self.bucket}")
        with self._mapped(key):
            self.client.download_fileobj(
                self.bucket, self._key(key), dest, Callback=on_bytes, Config=self.transfer
            )
        return info

    def open(self, key: str) -> BinaryIO:
        """The object's body, streamed over one connection (sequential reads)."""
        with self._mapped(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return _MappedBody(self, key, body)  # type: ignore[return-value]

    def list(self, prefix: str) -> list[BlobInfo]:
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._mapped(prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    info = self.head(key)
                    if info is not None:
                        out.append(info)
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        try:
            with self._mapped(key):
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except BlobNotFoundError:
            pass  # gone already: what delete promises


def _client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client for ``endpoint_url`` (None: AWS), with the usual credentials.

    boto3 takes some malformed URLs (a port past 65535, an ``ftp:`` scheme) and fails
    on them only at the first request, so the URL is checked here first."""
    if endpoint_url is not None and not _is_http_url(endpoint_url):
        raise ConfigurationError(
            f"the S3 endpoint {endpoint_url!r} is not an http(s) URL",
            hint="give one such as https://s3.example.org or http://127.0.0.1:9000"
            " (or none, for AWS)",
        )
    try:
        return boto3.client("s3", endpoint_url=endpoint_url)
    except _SETUP_ERRORS as exc:
        raise _setup_error(exc) from exc
    except ValueError as exc:  # boto3's own check of the endpoint
        raise ConfigurationError(
            f"the S3 endpoint {endpoint_url!r} is not usable: {exc}",
            hint="give an http(s) URL, or none for AWS",
            orig=exc,
        ) from exc


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _setup_error(exc: Exception) -> ConfigurationError:
    """A setup mistake boto3 found before sending anything (no credentials, an unknown
    profile, a broken config file, a malformed bucket name): someone must fix it, so it
    is not retryable."""
    if isinstance(exc, ParamValidationError):
        return ConfigurationError(
            f"S3 refused the request before sending it: {' '.join(str(exc).split())}",
            hint="check the bucket name and the prefix",
            orig=exc,
        )
    return ConfigurationError(
        f"S3 cannot be used as set up: {' '.join(str(exc).split())}",
        hint="give boto3 credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a"
        " profile in ~/.aws), and check AWS_PROFILE and the AWS config files",
        orig=exc,
    )


class _MappedBody(io.RawIOBase):
    """An object's body whose read errors (a reset, a timeout mid-download) are mapped
    like every other S3 error."""

    def __init__(self, store: S3BlobStore, key: str, body: Any) -> None:
        self.store, self.key, self.body = store, key, body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self.store._mapped(self.key):
            try:
                return bytes(self.body.read(None if size < 0 else size))
            except (ClientError, BotoCoreError):
                raise  # mapped by _mapped
            except Exception as exc:  # urllib3's protocol errors, a reset socket
                raise OfflineError(f"the download of {self.key} broke off: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.body.close()
        super().close()


# the protocols this store implements, checked by mypy
_is_blobstore: type[BlobStore] = S3BlobStore
