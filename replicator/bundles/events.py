"""Outbox messages at the ingest service: each event of a verified message
(``BundleSink``) becomes a document of ``outbox_<type>``, keyed by the message id and
the event's position, so a message applied again changes nothing."""

from __future__ import annotations

import json
from typing import Any

from ..stores.base import DeviceRecord, RemoteDoc, RemoteStore, Write
from ..stores.ingest import IngestRequest
from .rows import batch_size, write_batches


def apply_events(
    store: RemoteStore, device: DeviceRecord, request: IngestRequest, type_: str, events: list[Any]
) -> tuple[int, dict[str, str]]:
    """Write the ``events`` of ``request``'s message (of type ``type_``) into ``store``
    as ``device``; the events written (or there already) and those refused, with why."""
    coll = f"outbox_{type_.lower()}"
    docs = [{"id": f"{request.bundle}.{n}", "data": event_document(request, type_, e)}
            for n, e in enumerate(events)]  # fmt: skip
    refused: dict[str, str] = {}

    def plan(batch: list[dict[str, Any]], there: dict[str, RemoteDoc]) -> list[Write]:
        return [Write(coll, d["id"], d["data"]) for d in batch if d["id"] not in there]

    size = batch_size(store)
    batches = (docs[i : i + size] for i in range(0, len(docs), size))
    write_batches(store, device, coll, batches, plan, refused.__setitem__)
    return len(docs) - len(refused), refused


def event_document(request: IngestRequest, type_: str, event: Any) -> dict[str, Any]:
    """The document one outbox event is kept as."""
    known = isinstance(event, dict)
    return {
        "type": type_,
        "device": request.device,
        "msg_id": request.bundle,
        "key": event.get("key") if known else None,
        "timestamp": event.get("timestamp") if known else None,
        "data": json.dumps(event.get("data") if known else event),
    }
