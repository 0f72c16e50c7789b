"""An outbox sink that sends each message as one HTTP request (httpx).

The method is the configuration's (POST, PUT or PATCH). A batch goes as gzipped
JSON with ``Content-Encoding: gzip``; a single event as plain JSON. Every request
carries the message's id in the ``X-Message-Id`` header (and the event's key in
``X-Event-Key`` for a single event), the same on every attempt, so a receiver can
drop a message it has already taken.

What an answer means:

* 2xx: delivered;
* 408, 429 and 5xx: :class:`TransientError`, with the ``Retry-After`` delay when
  the receiver gave one (seconds or an HTTP date);
* any other status: :class:`DeliveryRejected` (the outbox dead-letters the batch);
* no answer (refused, reset, timed out, DNS): :class:`OfflineError`.

:class:`HttpIngest`, the ingest seam (``stores/ingest.py``) over HTTP, maps answers the
same way, except that a refusal is a :class:`RemoteError`: the service refused the
request itself, and there is no message to dead-letter.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.utils
from collections.abc import Iterator, Mapping

import httpx

from ..errors import DeliveryRejected, OfflineError, RemoteError, TransientError
from .base import Delivery, DeviceRecord, Sink
from .ingest import IngestRequest, IngestResult, IngestService

#: statuses that a later attempt can turn into a success
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
#: how much of a refusal's body is kept in the dead letter
KEPT_RESPONSE = 2000


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
    """Sends outbox messages to ``url`` with ``method``.

    ``client`` may be an ``httpx.Client`` of the app's (proxies, certificates,
    auth); the sink then leaves closing it to the app. ``headers`` are added to
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
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = dict(headers or {})

    def deliver(self, delivery: Delivery) -> None:
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "X-Message-Id": delivery.msg_id,
            "X-Outbox-Type": delivery.type,
            "X-Event-Count": str(delivery.event_count),
        }
        if delivery.gzipped:
            headers["Content-Encoding"] = "gzip"
        if delivery.key is not None:
            headers["X-Event-Key"] = delivery.key
        with transport_errors(self.url):
            response = self._client.request(
                self.method, self.url, content=delivery.body, headers=headers
            )
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in RETRYABLE_STATUSES:
            raise TransientError(
                f"{self.url} answered HTTP {status}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        raise DeliveryRejected(status, response.text[:KEPT_RESPONSE], delivery.msg_id)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class HttpIngest:
    """Sends ingest requests (:class:`IngestRequest`) to a campaign service's ``url``
    as JSON ``POST``s; the answer is an ``IngestResult`` in JSON (``Ingestor.serve``
    speaks this). ``headers`` go with every request (e.g. ``Authorization``).

    2xx with a result: the answer; 408, 429, 5xx: :class:`TransientError`; no answer:
    :class:`OfflineError`; any other status or an unreadable answer: :class:`RemoteError`
    (the service refuses the request itself: a wrong URL or credential).
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 120.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"HttpIngest({self.url!r})"

    def submit(self, request: IngestRequest, device: DeviceRecord | None = None) -> IngestResult:
        # (``device`` is not sent: the request itself names the device)
        with transport_errors(self.url):
            response = self._client.post(self.url, json=request.to_json(), headers=self._headers)
        status = response.status_code
        if status in RETRYABLE_STATUSES:
            raise TransientError(
                f"{self.url} answered HTTP {status}",
                retry_after=retry_after(response.headers.get("Retry-After")),
            )
        if not 200 <= status < 300:
            raise RemoteError(
                f"the ingest service at {self.url} refused the request: HTTP {status}"
                f" {response.text[:200]}",
                hint="check the service URL and credentials",
            )
        try:
            return IngestResult.from_json(response.json())
        except ValueError as exc:
            raise RemoteError(f"the ingest service at {self.url} answered nonsense: {exc}") from exc

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


# the protocols this store implements, checked by mypy
_is_sink: type[Sink] = HttpSink
_is_ingestservice: type[IngestService] = HttpIngest
