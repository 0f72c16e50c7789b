"""An outbox sink that sends each message as one HTTP request (httpx).

The method is the configuration's (POST, PUT or PATCH). A batch goes as gzipped
JSON with ``Content-Encoding: gzip``; a single event as plain JSON. Every request
carries the message's id in the ``X-Message-Id`` header (and the event's key in
``X-Event-Key`` for a single event), the same on every attempt, so a receiver can
drop a message it has already taken.

Header values are text any string can be: a key or a type that is printable
ASCII goes as is; any other (non-ASCII, a control character such as CR or LF, a
space at either end, or text starting with ``UTF-8''``) goes as RFC 8187's
``UTF-8''`` followed by its UTF-8 bytes percent-encoded (RFC 3986), which
:func:`header_text` (or ``urllib.parse.unquote`` of what follows the prefix)
reads back.

Each request has one deadline, ``timeout`` seconds in all: connecting, sending
and the answer, however the receiver trickles it (:mod:`.deadline`); of the
answer, at most :data:`KEPT_RESPONSE` bytes are read.

What an answer means:

* 2xx: delivered;
* 408, 429 and 5xx: :class:`TransientError`, with the ``Retry-After`` delay when
  the receiver gave one (seconds or an HTTP date);
* any other status: :class:`DeliveryRejected` (the outbox dead-letters the batch);
* no answer (refused, reset, DNS): :class:`OfflineError`; no whole answer within
  the deadline: :class:`TransientError`.

:class:`HttpIngest`, the ingest seam (``stores/ingest.py``) over HTTP, maps answers the
same way, except that a refusal is a :class:`RemoteError` with the ``status``: the
service refused the request itself, and there is no message to dead-letter. A device
of a signed-in user gives it the user's session (``tokens=``): every request carries
the user's current ID token and the device's installation id, and a ``401`` is
answered by one refresh of the token and one more try, then :class:`AuthError`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
import zlib
from collections.abc import Iterator, Mapping
from urllib.parse import quote, unquote

import attrs
import httpx

from ..errors import AuthError, DeliveryRejected, OfflineError, RemoteError, TransientError
from .base import Delivery, DeviceRecord, IdTokens, Sink
from .deadline import DeadlineTransport, deadline
from .ingest import IngestRequest, IngestResult, IngestService

#: statuses that a later attempt can turn into a success
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
#: how much of an answer is read (of a refusal, kept in the dead letter)
KEPT_RESPONSE = 2000
#: what starts a header value that is percent-encoded UTF-8 (RFC 8187's ext-value)
ENCODED = "UTF-8''"
#: what RFC 8187 lets through unencoded besides letters and digits (attr-char)
_ATTR_CHARS = "!#$&+-.^_`|~"
#: the header naming the calling device's installation id (read by the ingest service)
DEVICE_HEADER = "X-Replicator-Device"


def header_value(text: str) -> str:
    """``text`` as an HTTP header value: as is when it is printable ASCII with no
    space at either end (and does not start with ``UTF-8''``), else ``UTF-8''``
    and its UTF-8 bytes percent-encoded. Any string goes, the same one every
    time; :func:`header_text` reads it back."""
    if (
        text.isascii()
        and text.isprintable()
        and text == text.strip(" ")
        and not text.startswith(ENCODED)
    ):
        return text
    return ENCODED + quote(text, safe=_ATTR_CHARS, errors="surrogatepass")


def header_text(value: str) -> str:
    """The text :func:`header_value` made ``value`` of: what follows ``UTF-8''``
    percent-decoded as UTF-8, any other value as it is."""
    if value.startswith(ENCODED):
        return unquote(value[len(ENCODED) :], errors="replace")
    return value


def kept_text(response: httpx.Response) -> str:
    """The start of the answer of a streamed ``response`` as text: at most
    :data:`KEPT_RESPONSE` bytes are read off the network, whatever its size, and a
    gzip or deflate answer is inflated to at most as many."""
    raw = b""
    for chunk in response.iter_raw():
        raw += chunk
        if len(raw) >= KEPT_RESPONSE:
            break
    data = raw[:KEPT_RESPONSE]
    if response.headers.get("Content-Encoding", "").strip().lower() in ("gzip", "deflate"):
        with contextlib.suppress(zlib.error):
            data = zlib.decompressobj(wbits=47).decompress(data, KEPT_RESPONSE)
    return data.decode("utf-8", errors="replace")


def retry_after(value: str | None, now: _dt.datetime | None = None) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds (never negative), or
    ``None`` when the header is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


@contextlib.contextmanager
def transport_errors(url: str) -> Iterator[None]:
    """The one place httpx's transport errors become replicator's: no answer in time is
    :class:`TransientError`, no answer at all (refused, reset, DNS) :class:`OfflineError`."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientError(f"{url} did not answer in time", orig=exc) from exc
    except httpx.TransportError as exc:
        raise OfflineError(f"could not reach {url}: {exc}", orig=exc) from exc


class HttpSink:
    """Sends outbox messages to ``url`` with ``method``; each request ends within
    ``timeout`` seconds in all.

    ``client`` may be an ``httpx.Client`` of the app's (proxies, certificates,
    auth); the sink then leaves closing it to the app. Its requests keep the
    deadline when it was made with ``transport=DeadlineTransport()`` (from
    ``replicator.stores.deadline``); with another transport, httpx's timeouts
    (per network operation) are all that bound them. ``headers`` are added to
    every request (an API key, for example).
    """

    def __init__(
        self,
        method: str,
        url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.method = method.upper()
        self.url = url
        self.timeout = timeout
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout, transport=DeadlineTransport())
        self._headers = dict(headers or {})

    def deliver(self, delivery: Delivery) -> None:
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "X-Message-Id": header_value(delivery.msg_id),
            "X-Outbox-Type": header_value(delivery.type),
            "X-Event-Count": str(delivery.event_count),
        }
        if delivery.gzipped:
            headers["Content-Encoding"] = "gzip"
        if delivery.key is not None:
            headers["X-Event-Key"] = header_value(delivery.key)
        with (
            deadline(self.timeout),
            transport_errors(self.url),
            self._client.stream(
                self.method, self.url, content=delivery.body, headers=headers
            ) as response,
        ):
            status = response.status_code
            if 200 <= status < 300:
                # a short answer read whole keeps the connection for the next one
                with contextlib.suppress(httpx.HTTPError):
                    kept_text(response)
                return
            text = kept_text(response)
        if status in RETRYABLE_STATUSES:
            raise TransientError(
                f"{self.url} answered HTTP {status}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        raise DeliveryRejected(status, text, delivery.msg_id)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class HttpIngest:
    """Sends ingest requests (:class:`IngestRequest`) to a campaign service's ``url``
    as JSON ``POST``s; the answer is an ``IngestResult`` in JSON (``Ingestor.serve``
    speaks this).

    ``tokens``: the signed-in user's session (``replicator.auth.Session``, any
    ``IdTokens``), the devices' way. Every request carries ``Authorization: Bearer
    <the user's current ID token>`` and ``X-Replicator-Device: <the request's
    device>``; the service answers a token it does not take (expired, revoked) with
    401, and the token is then refreshed once and the request sent once more; a
    second 401 is an :class:`AuthError` with the service's reason. The session's own
    errors (``AuthError``: sign in again; ``OfflineError``) end the call as they are.

    ``scope``: the scope every request names (``IngestRequest.scope``), for a device of
    a scope (``ScopedReplicator``'s ``bundles_for``): the service ingests into that
    scope's root, as the scope's declaration lets the user's role write.

    ``headers`` go with every request: the operators' way, a service-to-service
    secret (``Authorization: Bearer <token>`` of the service's ``DeviceTokens``), for
    programs that sign in as no user. A device needs none.

    2xx with a result: the answer; 408, 429, 5xx: :class:`TransientError`; no answer:
    :class:`OfflineError`; any other status or an unreadable answer: :class:`RemoteError`
    (the service refuses the request itself: a wrong URL or credential).
    """

    def __init__(
        self,
        url: str,
        *,
        tokens: IdTokens | None = None,
        client: httpx.Client | None = None,
        timeout: float = 120.0,
        headers: Mapping[str, str] | None = None,
        scope: str | None = None,
    ) -> None:
        self.url = url
        self.tokens = tokens
        self.scope = scope
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        user = f", uid={self.tokens.uid!r}" if self.tokens is not None else ""
        scope = f", scope={self.scope!r}" if self.scope is not None else ""
        return f"HttpIngest({self.url!r}{user}{scope})"

    def _post(self, request: IngestRequest, refreshed: bool) -> httpx.Response:
        headers = dict(self._headers)
        if self.tokens is not None:
            token = self.tokens.refresh_id_token() if refreshed else self.tokens.id_token()
            headers["Authorization"] = f"Bearer {token}"
            headers[DEVICE_HEADER] = header_value(request.device)
        with transport_errors(self.url):
            return self._client.post(self.url, json=request.to_json(), headers=headers)

    def submit(self, request: IngestRequest, device: DeviceRecord | None = None) -> IngestResult:
        # (``device`` is not sent: the request itself names the device)
        if self.scope is not None:
            request = attrs.evolve(request, scope=self.scope)
        response = self._post(request, refreshed=False)
        if response.status_code == 401 and self.tokens is not None:
            response = self._post(request, refreshed=True)
            if response.status_code == 401:
                raise AuthError(
                    f"the ingest service at {self.url} refused the user's ID token:"
                    f" {_error_of(response)}",
                    hint="sign the user in again; their unsynced rows are kept",
                )
        status = response.status_code
        if status in RETRYABLE_STATUSES:
            raise TransientError(
                f"{self.url} answered HTTP {status}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        if not 200 <= status < 300:
            refused = RemoteError(
                f"the ingest service at {self.url} refused the request: HTTP {status}"
                f" {response.text[:200]}",
                hint="check the service URL and credentials",
            )
            refused.status = status
            raise refused
        try:
            return IngestResult.from_json(response.json())
        except ValueError as exc:
            raise RemoteError(f"the ingest service at {self.url} answered nonsense: {exc}") from exc

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _error_of(response: httpx.Response) -> str:
    """The ``error`` of a JSON refusal, else the start of the answer."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error)[:300] if error else response.text[:300]


# the protocols this store implements, checked by mypy
_is_sink: type[Sink] = HttpSink
_is_ingestservice: type[IngestService] = HttpIngest
