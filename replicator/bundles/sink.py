"""An outbox sink that sends each message the way upload-only rows go up: as a
checksummed object in the bucket, announced to the ingest service.

Invariants:

* a message's object key and bundle id derive from its ``msg_id`` alone, so a message
  sent again (after a lost answer) is the same object and the same request, which
  the service recognises and never applies twice;
* the object is written once (``put_once``): a key already holding other bytes is a
  refusal (``DeliveryRejected`` 409), never an overwrite;
* delivered means the service *accepted* the message; anything else is an error the
  outbox acts on (``TransientError``: ask again later; ``DeliveryRejected``:
  dead-letter it). A service that refuses the sender itself (a 4xx to the request:
  a token it lacks) is a ``DeliveryRejected`` with that status too, as the ``Sink``
  protocol asks: no later attempt succeeds until someone changes something.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket

from ..errors import DeliveryRejected, RemoteError, TransientError
from ..stores.base import BlobStore, Delivery, DeviceRecord, Sink
from ..stores.ingest import IngestRequest, IngestService
from .format import EVENTS, put_once


def message_body(delivery: Delivery) -> bytes:
    """The gzip'd object a message is stored as: a batch's body as the outbox made it;
    a single event in the batch form too, wrapped around its data's text."""
    if delivery.gzipped:
        return delivery.body
    head = json.dumps({"msg_id": delivery.msg_id, "type": delivery.type})[:-1]
    event = f'{{"key":{json.dumps(delivery.key)},"data":'.encode() + delivery.body + b"}"
    return gzip.compress(head.encode() + b',"events":[' + event + b"]}", mtime=0)


class BundleSink:
    """An outbox sink: each message is stored as a checksummed object in ``blobs``
    under ``{prefix}/<device>/outbox/<type>/<msg_id>.json.gz`` (the device's own folder,
    the only place the service takes its bundles from) and announced to ``service``;
    the ingestor verifies it and keeps its events as documents of ``outbox_<type>``
    (lower case) in its remote store.

    The bundle id is the message's ``msg_id``, so a message sent again (a lost answer)
    is recognised. Accepted: delivered. Pending (a queue the ingestors have not reached):
    ``TransientError``, so the outbox asks again later. Rejected: ``DeliveryRejected``
    with the service's reason (HTTP-like status 422), and the message is dead-lettered.
    ``device`` names the sender in the requests (default: this host's name).
    """

    def __init__(
        self,
        blobs: BlobStore,
        service: IngestService,
        *,
        device: str | None = None,
        prefix: str = "bundles",
        retry_after: float = 30.0,
    ) -> None:
        self.blobs = blobs
        self.service = service
        self.device = device or f"outbox-{socket.gethostname()}"
        self.prefix = prefix
        self.retry_after = retry_after

    def deliver(self, delivery: Delivery) -> None:
        body = message_body(delivery)
        sha = hashlib.sha256(body).hexdigest()
        key = f"{self.prefix}/{self.device}/outbox/{delivery.type}/{delivery.msg_id}.json.gz"
        if not put_once(self.blobs, key, io.BytesIO(body), sha):
            raise DeliveryRejected(409, f"{key} holds other bytes", delivery.msg_id)
        request = IngestRequest(
            bundle=delivery.msg_id,
            key=key,
            sha256=sha,
            size=len(body),
            count=delivery.event_count,
            collection=f"{EVENTS}{delivery.type}",
            device=self.device,
        )
        try:
            result = self.service.submit(
                request, DeviceRecord(self.device, name=self.device, platform="outbox")
            )
        except RemoteError as exc:
            status = exc.status
            if exc.retryable or isinstance(exc, DeliveryRejected) or status is None:
                raise
            if not 400 <= status < 500:
                raise
            raise DeliveryRejected(status, exc.message, delivery.msg_id) from exc
        if result.state == "accepted" and result.bundle == delivery.msg_id:
            return
        if result.state == "pending":
            raise TransientError(
                f"the ingest service has not decided on message {delivery.msg_id} yet",
                retry_after=self.retry_after,
            )
        raise DeliveryRejected(422, result.reason or "rejected", delivery.msg_id)

    def close(self) -> None:
        close = getattr(self.service, "close", None)
        if callable(close):
            close()


# the protocol this sink implements, checked by mypy
_is_sink: type[Sink] = BundleSink
