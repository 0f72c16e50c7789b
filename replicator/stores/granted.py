"""GrantedBlobStore: a device's blob store without bucket keys.

The device holds no S3 credentials. For each operation it asks the storage-grant
service (``POST {service}/storage/sign``, with its user's ID token) to sign the S3
request, then sends that request to S3 itself over httpx: bytes go straight between
the device and S3, the service only signs. Keys are relative to the user's folder,
which the service alone chooses (``users/{uid}/``); the wire format is
:mod:`.grant_ops`, the service ``replicator.grants``.

What S3 or the service answers becomes replicator's error tree here, in one place
(:meth:`GrantedBlobStore._failure`):

* a failed precondition (412, or 404/409 on a conditional write) is
  ``PreconditionFailed``; a missing key ``BlobNotFoundError``; a body that does not
  match its signed checksum ``BlobIntegrityError``;
* a grant that expired before S3 saw it (403 "Request has expired") is signed again
  once, transparently; any other 403 is ``AccessDeniedError`` (not retryable);
* 5xx, 429 and ``SlowDown`` are ``TransientError``; no answer is ``OfflineError``;
* the service's 401 refreshes the ID token once and asks again, then ``AuthError``;
  its 403 is ``AccessDeniedError``, its 400 a ``RemoteError`` naming what it refused.

A put is one signed ``PUT`` of at most 5 GB (S3's limit for one request), streamed
from the source with its SHA-256 checksum and metadata; a list is ListObjectsV2
pages, then the objects' HEADs (their SHA-256 is metadata), signed in one batch.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote_plus, urlsplit

import attrs
import httpx

from ..errors import (
    AccessDeniedError,
    AuthError,
    BlobIntegrityError,
    BlobNotFoundError,
    ConfigurationError,
    PreconditionFailed,
    RemoteError,
    TransientError,
)
from .base import BlobInfo, BlobStore, IdTokens, hash_rest
from .grant_ops import MAX_OPS, READ_OPS, Op, OpName, Signed, key_problem, scope_problem
from .http import RETRYABLE_STATUSES, kept_text, retry_after, transport_errors

T = TypeVar("T")
_BUF = 1 << 20
#: most bytes of one ListObjectsV2 page read (1000 keys of 1 KB, and room to spare)
MAX_LIST_PAGE = 8 << 20
#: most bytes of one object in one signed PUT (S3's limit)
MAX_PUT = 5 << 30
#: most read grants kept for reuse
_KEPT_GRANTS = 4096
_INTEGRITY = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}
_BUSY = {"SlowDown", "RequestTimeout", "ThrottlingException", "ServiceUnavailable"}


class _Expired(Exception):
    """S3 said the grant had expired (or, for a HEAD, refused it without saying why)."""


class GrantedBlobStore:
    """A :class:`~replicator.stores.base.BlobStore` over requests a storage-grant
    service signs (see the module's docstring).

    ``service_url`` is the service's root (``https://ingest.example.org``);
    ``tokens`` the signed-in user's ID tokens (a ``replicator.auth.Session``).
    ``space`` names one of the service's read-only shared folders (reference data)
    instead of the user's own: then only get, open, head and list work. ``scope`` names
    a scope's folder instead (``scopes/{scope}/`` in the bucket), which the service
    grants while the user is a member of the scope
    (``blobs_for=lambda m: GrantedBlobStore(url, session, scope=m.scope)`` for a
    ``ScopedReplicator``); a non-member's every operation is ``AccessDeniedError``.
    ``client``
    may be an ``httpx.Client`` of the app's (proxies, certificates); ``timeout``
    bounds each network operation. The cost of minting, for benchmarks: ``grants``
    counts the requests to the service, ``signed`` the operations signed and
    ``grant_seconds`` the time spent waiting for the service.
    """

    def __init__(
        self,
        service_url: str,
        tokens: IdTokens,
        *,
        space: str | None = None,
        scope: str | None = None,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(service_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"the storage service {service_url!r} is not an http(s) URL",
                hint="give its root, such as https://ingest.example.org",
            )
        if scope is not None and (space is not None or scope_problem(scope)):
            raise ConfigurationError(
                f"cannot reach the scope {str(scope)[:80]!r}: "
                + (scope_problem(scope) or "a store has a space or a scope, not both"),
                hint="give a scope's id (Membership.scope), and no space",
            )
        self.service_url = service_url.rstrip("/")
        self.sign_url = f"{self.service_url}/storage/sign"
        self.tokens = tokens
        self.space = space
        self.scope = scope
        self._owns_client = client is None
        self._http = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))
        self.grants = 0
        self.signed = 0
        self.grant_seconds = 0.0
        self._lifetime = 0.0
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], tuple[Signed, float]] = {}

    def __repr__(self) -> str:
        where = f", space={self.space!r}" if self.space else ""
        where += f", scope={self.scope!r}" if self.scope else ""
        return f"GrantedBlobStore({self.service_url!r}{where})"

    def close(self) -> None:
        if self._owns_client:
            self._http.close()

    # -- grants -------------------------------------------------------------------

    def _op(self, op: OpName, key: str, **options: Any) -> Op:
        """The op for ``key``, checked here first: a key the service would refuse is the
        caller's mistake, said without a round trip."""
        problem = key_problem(key, prefix=op == "list")
        if problem:
            raise ConfigurationError(f"blob key {key[:80]!r} cannot be granted: {problem}")
        if self.space is not None and op not in READ_OPS:
            raise AccessDeniedError(
                f"the shared space {self.space!r} is read-only: no {op} of {key[:80]!r}",
                hint="write under the user's own folder (a GrantedBlobStore without space)",
            )
        return Op(op, key, space=self.space, scope=self.scope, **options)

    def sign(self, ops: Sequence[Op]) -> list[Signed]:
        """The service's signed requests for ``ops``, in order (several per request)."""
        out: list[Signed] = []
        for start in range(0, len(ops), MAX_OPS):
            out += self._ask([op.to_json() for op in ops[start : start + MAX_OPS]])
        return out

    def _ask(self, ops: list[dict[str, Any]]) -> list[Signed]:
        response = self._post(ops, self.tokens.id_token())
        if response.status_code == 401:  # the token expired or was revoked meanwhile
            response = self._post(ops, self.tokens.refresh_id_token())
        status = response.status_code
        if status == 200:
            return self._signed(response, len(ops))
        error = _service_error(response)
        if status == 401:
            raise AuthError(f"the storage service refused the ID token: {error}")
        if status == 403:
            raise AccessDeniedError(
                f"the storage service refused: {error}",
                hint="this user may not do that (a write in a read-only shared space; a"
                " scope the user is not, or no longer, a member of)",
            )
        if status in RETRYABLE_STATUSES:
            raise TransientError(
                f"the storage service answered HTTP {status}: {error}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        refused = RemoteError(
            f"the storage service refused the request: HTTP {status}: {error}",
            hint="check the service URL, and that this replicator matches the service's",
        )
        refused.status = status
        raise refused

    def _post(self, ops: list[dict[str, Any]], token: str) -> httpx.Response:
        self.grants += 1
        start = time.perf_counter()
        try:
            with transport_errors(self.sign_url):
                return self._http.post(
                    self.sign_url, json={"ops": ops}, headers={"Authorization": f"Bearer {token}"}
                )
        finally:
            self.grant_seconds += time.perf_counter() - start

    def _signed(self, response: httpx.Response, count: int) -> list[Signed]:
        try:
            answer = response.json()
            signed = [Signed.from_json(item) for item in answer["requests"]]
            lifetime = float(answer.get("expires_in", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"the storage service answered nonsense: {exc}") from exc
        if len(signed) != count:
            raise RemoteError(f"the storage service signed {len(signed)} ops of {count}")
        self.signed += count
        self._lifetime = lifetime
        return signed

    def _grant(self, op: Op) -> Signed:
        """A signed request for ``op``. A read (get, head) is signed with its sibling
        (head, get) and both are kept while more than a quarter of their lifetime is
        left: a HEAD then a GET of one key, the usual pattern, cost one grant."""
        if op.op not in ("get", "head"):
            return self.sign([op])[0]
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get((op.op, op.key))
            if kept is not None and kept[1] > now:
                return kept[0]
        sibling = attrs.evolve(op, op="head" if op.op == "get" else "get")
        signed, other = self.sign([op, sibling])
        until = now + self._lifetime * 0.75
        with self._lock:
            if len(self._kept) > _KEPT_GRANTS:
                self._kept.clear()
            self._kept[(op.op, op.key)] = (signed, until)
            self._kept[(sibling.op, op.key)] = (other, until)
        return signed

    def _forget(self, key: str) -> None:
        with self._lock:
            self._kept.pop(("get", key), None)
            self._kept.pop(("head", key), None)

    def _run(self, op: Op, send: Callable[[Signed], T], signed: Signed | None = None) -> T:
        """``send`` the op's signed request (``signed``, or one asked for now); a grant
        that expired on the way is signed again once."""
        try:
            return send(signed or self._grant(op))
        except _Expired:
            self._forget(op.key)
        try:
            return send(self.sign([op])[0])
        except _Expired:
            if op.op == "head":
                raise AccessDeniedError(
                    f"S3 refused a HEAD of {op.key!r} signed by the service", hint=_DENIED
                ) from None
            raise TransientError(
                f"S3 took a grant for {op.key!r} as expired as soon as it was signed",
                hint="the storage service's clock and S3's disagree; sync again later",
            ) from None

    # -- S3 -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _s3(
        self, signed: Signed, key: str, *, content: Any = None, conditional: bool = False
    ) -> Iterator[httpx.Response]:
        """The answer to ``signed``, streamed; a refusal raised as replicator's error."""
        headers = {**signed.headers, "Accept-Encoding": "identity"}
        if isinstance(content, tuple):
            content, headers["Content-Length"] = content
        request = self._http.build_request(
            signed.method, signed.url, headers=headers, content=content
        )
        with transport_errors(urlsplit(signed.url).netloc):
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 300:
                    raise self._failure(response, key, conditional)
                yield response
            finally:
                response.close()

    def _failure(self, response: httpx.Response, key: str, conditional: bool) -> Exception:
        """The one place S3's refusals become replicator's errors (or :class:`_Expired`)."""
        status = response.status_code
        code, message = _s3_error(kept_text(response))
        if status == 403 and (response.request.method == "HEAD" or "expired" in message.lower()):
            return _Expired()
        if status == 403:
            return AccessDeniedError(f"S3 refused {key!r}: {code} {message}", hint=_DENIED)
        if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
            return PreconditionFailed(f"blob {key} changed or exists")
        if conditional and status in (404, 409):  # S3 may answer either for "not met"
            return PreconditionFailed(f"blob {key} changed or exists")
        if status == 404:
            return BlobNotFoundError(f"no blob {key}")
        if code in _INTEGRITY:
            return BlobIntegrityError(f"S3 refused {key}: its bytes were damaged")
        if status in RETRYABLE_STATUSES or code in _BUSY:
            return TransientError(
                f"S3 failed on {key}: HTTP {status} {code}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        refused = RemoteError(f"S3 refused {key}: HTTP {status} {code} {message}", hint=_DENIED)
        refused.status = status
        return refused

    # -- the BlobStore protocol ---------------------------------------------------

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
        with _seekable(source) as source:
            start = source.tell()
            digest, size = hash_rest(source, _BUF)
            sha = digest.hexdigest()
            if sha256 is not None and sha != sha256.lower():
                raise BlobIntegrityError(
                    f"blob {key}: the bytes hash to {sha[:12]}…, not the {sha256[:12]}…"
                    " announced; nothing stored"
                )
            if size > MAX_PUT:
                raise ConfigurationError(f"blob {key} is {size} bytes, over S3's 5 GB for one put")
            op = self._op("put", key, sha256=sha, if_none_match=if_none_match, if_match=if_match)
            conditional = if_none_match or if_match is not None

            def send(signed: Signed) -> BlobInfo:
                source.seek(start)
                body = (_chunks(source, on_bytes), str(size))
                with self._s3(signed, key, content=body, conditional=conditional) as response:
                    return BlobInfo(key, size, sha, response.headers.get("ETag", ""))

            return self._run(op, send)

    def head(self, key: str) -> BlobInfo | None:
        return self._run(self._op("head", key), functools.partial(self._head, key))

    def _head(self, key: str, signed: Signed) -> BlobInfo | None:
        try:
            with self._s3(signed, key) as response:
                return _info(key, response.headers)
        except BlobNotFoundError:
            return None

    def get(
        self, key: str, dest: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
    ) -> BlobInfo:
        def send(signed: Signed) -> BlobInfo:
            with self._s3(signed, key) as response:
                info = _info(key, response.headers)
                with transport_errors(urlsplit(signed.url).netloc):
                    for block in response.iter_raw(_BUF):
                        dest.write(block)
                        if on_bytes is not None:
                            on_bytes(len(block))
            return info

        return self._run(self._op("get", key), send)

    def open(self, key: str) -> BinaryIO:
        """The object's body, streamed over one connection (sequential reads)."""

        def send(signed: Signed) -> BinaryIO:
            stack = contextlib.ExitStack()
            response = stack.enter_context(self._s3(signed, key))
            return _Body(key, response, stack)  # type: ignore[return-value]

        return self._run(self._op("get", key), send)

    def list(self, prefix: str) -> list[BlobInfo]:
        keys: list[str] = []
        token: str | None = None
        while True:
            op = self._op("list", prefix, continuation=token)
            page, token = self._run(op, functools.partial(self._list_page, prefix))
            keys += page
            if token is None:
                break
        heads = [self._op("head", key) for key in keys]
        out = []
        for op, signed in zip(heads, self.sign(heads) if heads else [], strict=True):
            info = self._run(op, functools.partial(self._head, op.key), signed)
            if info is not None:  # deleted since it was listed
                out.append(info)
        return sorted(out, key=lambda i: i.key)

    def _list_page(self, prefix: str, signed: Signed) -> tuple[Sequence[str], str | None]:
        with self._s3(signed, prefix) as response:
            body = b""
            with transport_errors(urlsplit(signed.url).netloc):
                for block in response.iter_raw(_BUF):
                    body += block
                    if len(body) > MAX_LIST_PAGE:
                        raise RemoteError(f"S3's list of {prefix!r} is over {MAX_LIST_PAGE} bytes")
        return _parse_list(body, (signed.base or "") + prefix, len(signed.base or ""))

    def delete(self, key: str) -> None:
        def send(signed: Signed) -> None:
            try:
                with self._s3(signed, key):
                    pass
            except BlobNotFoundError:
                pass  # gone already: what delete promises

        self._run(self._op("delete", key), send)


_DENIED = (
    "the storage service signed what S3 refused: check the service's S3 rights on the"
    " bucket (docs/guides/deploy-aws.md)"
)


def _info(key: str, headers: httpx.Headers) -> BlobInfo:
    size = headers.get("Content-Length", "")
    return BlobInfo(
        key,
        int(size) if size.isdigit() else 0,
        headers.get("x-amz-meta-sha256", ""),
        headers.get("ETag", ""),
    )


def _chunks(source: BinaryIO, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    while block := source.read(_BUF):
        yield block
        if on_bytes is not None:
            on_bytes(len(block))


@contextlib.contextmanager
def _seekable(source: BinaryIO) -> Iterator[BinaryIO]:
    """``source``, or a spooled copy of it when it cannot seek (it is read twice)."""
    if source.seekable():
        yield source
        return
    with tempfile.TemporaryFile() as spooled:
        while block := source.read(_BUF):
            spooled.write(block)
        spooled.seek(0)
        yield spooled


def _service_error(response: httpx.Response) -> str:
    """What the service said it refused (its ``error``), or the start of its answer."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error)[:300] if error else response.text[:300]


def _s3_error(text: str) -> tuple[str, str]:
    """The ``Code`` and ``Message`` of an S3 error document (empty when there is none)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return "", ""
    return (root.findtext("Code") or "").strip(), (root.findtext("Message") or "").strip()


def _parse_list(body: bytes, full_prefix: str, base: int) -> tuple[list[str], str | None]:
    """The relative keys of a ListObjectsV2 page and its continuation token."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise RemoteError(f"S3 answered a list that is not XML: {exc}") from exc
    encoded = (root.findtext("{*}EncodingType") or "").strip() == "url"
    keys = []
    for item in root.iterfind("{*}Contents"):
        key = item.findtext("{*}Key") or ""
        key = unquote_plus(key) if encoded else key
        if not key.startswith(full_prefix):
            raise RemoteError(f"S3 listed {key[:80]!r}, outside the prefix {full_prefix!r}")
        keys.append(key[base:])
    truncated = (root.findtext("{*}IsTruncated") or "").strip() == "true"
    token = root.findtext("{*}NextContinuationToken") if truncated else None
    return keys, token or None


class _Body(io.RawIOBase):
    """An object's body read as it arrives, a block at a time (a read copies only what
    it returns); a broken download is ``OfflineError``."""

    def __init__(self, key: str, response: httpx.Response, stack: contextlib.ExitStack) -> None:
        self.key, self._stack = key, stack
        self._blocks = response.iter_raw(_BUF)
        self._block, self._at = b"", 0
        self._where = urlsplit(str(response.request.url)).netloc

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._at >= len(self._block):
            with transport_errors(self._where):
                self._block, self._at = next(self._blocks, b""), 0
        out = self._block[self._at : self._at + size]
        self._at += len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        super().close()


# the protocols this store implements, checked by mypy
_is_blobstore: type[BlobStore] = GrantedBlobStore
