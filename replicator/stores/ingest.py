"""The ingest seam: what a sender asks a campaign service about one bundle, what the
service answers, and the :class:`IngestService` protocol both sides keep.

A sender (a device's bundle step, an outbox's ``BundleSink``) first puts a bundle in
the service's blob store, then sends an :class:`IngestRequest` naming it by key,
SHA-256, size and row count; the service verifies and applies it and answers with an
:class:`IngestResult`. Two implementations of the seam exist: ``HttpIngest``
(``stores/http.py``, JSON over HTTP to ``Ingestor.serve``) and :class:`StoreIngest`
(here: a document per request in the remote store's ``ingest_requests`` collection,
which ingestors poll).

Invariants:

* both messages have one JSON form (``to_json``/``from_json``); ``from_json`` refuses
  (``ValueError``, naming the field) anything a well-behaved peer would not send, so
  an answer or a request read from the wire or from a queue document is well-formed;
* a bundle is named by its id everywhere (the queue document's id is the bundle id),
  which is what makes asking again safe;
* this module imports no feature: the device side and the service side
  (``replicator.bundles``) both import it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from ..errors import PreconditionFailed
from .base import DeviceRecord, RemoteStore, Write

#: the remote store collection that carries ingest requests and their results
QUEUE = "ingest_requests"

State = Literal["accepted", "rejected", "pending"]
_STATES = ("accepted", "rejected", "pending")


def _text(data: Mapping[str, Any], name: str, *, limit: int = 1024) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


@attrs.frozen
class IngestRequest:
    """What a device asks the service to ingest: one bundle, by key and checksum.
    ``scope`` names the scope whose root the rows go to (``HttpIngest(scope=...)``
    sets it), None for the sender's own root; its JSON form has no ``scope`` then."""

    bundle: str
    key: str
    sha256: str
    size: int
    count: int
    collection: str
    device: str
    scope: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        if self.scope is None:
            del data["scope"]
        return data

    @classmethod
    def from_json(cls, data: Any) -> IngestRequest:
        """A request from its JSON form; ``ValueError`` naming the first bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("an ingest request is a JSON object")
        sha = _text(data, "sha256", limit=64).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError("sha256 must be 64 hex digits")
        return cls(
            bundle=_text(data, "bundle", limit=64),
            key=_text(data, "key"),
            sha256=sha,
            size=_count(data, "size"),
            count=_count(data, "count"),
            collection=_text(data, "collection", limit=256),
            device=_text(data, "device", limit=256),
            scope=None if data.get("scope") is None else _text(data, "scope", limit=256),
        )


@attrs.frozen
class IngestResult:
    """The service's answer about one bundle.

    ``accepted``: applied (``refused`` names the rows it would not take, with why);
    ``rejected``: nothing applied, ``reason`` says why (a damaged or mismatched
    bundle); ``pending``: not decided yet (queued, or another ingestor is at it).
    """

    bundle: str
    state: State
    reason: str = ""
    accepted: int = 0
    refused: Mapping[str, str] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "state": self.state,
            "reason": self.reason,
            "accepted": self.accepted,
            "refused": [{"id": k, "reason": v} for k, v in self.refused.items()],
        }

    @classmethod
    def from_json(cls, data: Any) -> IngestResult:
        if not isinstance(data, Mapping):
            raise ValueError("an ingest result is a JSON object")
        state = data.get("state")
        if state not in _STATES:
            raise ValueError(f"state must be one of {', '.join(_STATES)}")
        refused: dict[str, str] = {}
        items = data.get("refused") or []
        if not isinstance(items, list):
            raise ValueError("refused must be a list")
        for item in items:
            if not isinstance(item, Mapping):
                raise ValueError("each refused entry is an object with id and reason")
            refused[_text(item, "id", limit=64)] = str(item.get("reason", ""))[:500]
        reason = data.get("reason", "")
        return cls(
            bundle=_text(data, "bundle", limit=64),
            state=state,
            reason=reason if isinstance(reason, str) else "",
            accepted=_count(data, "accepted") if "accepted" in data else 0,
            refused=refused,
        )


@runtime_checkable
class IngestService(Protocol):
    """Where a device sends its ingest requests.

    ``submit(request, device)`` asks about one bundle, which the sender has already put
    in the service's blob store under ``request.key``, and returns the service's answer
    about that same bundle (``result.bundle == request.bundle``):

    * ``accepted``: the bundle was verified and its rows applied; ``accepted`` counts
      them and ``refused`` maps each row the service would not take to why;
    * ``rejected``: nothing of the bundle is applied; ``reason`` says why (no object
      under the key, one whose size or SHA-256 differs from the request's, one that
      is not a readable bundle or disagrees with the request);
    * ``pending``: not decided yet (queued, or another ingestor is at it); asking
      again later gets the decision.

    Asking again is always safe: a request sent again (after a lost answer) is
    answered with what the service recorded, and no bundle is applied twice. A
    request that reuses a recorded bundle id with another key, checksum or size is
    never applied.

    It raises ``OfflineError`` (the service cannot be reached) or ``TransientError``
    (busy, timed out) when asking again later can succeed, and another
    ``RemoteError`` when the service refuses the request itself (a wrong address or
    credential), which asking again does not mend. ``device`` is the sender's record,
    for services that note who asked.
    """

    def submit(self, request: IngestRequest, device: DeviceRecord) -> IngestResult: ...


def result_of(bundle: str, data: Mapping[str, Any]) -> IngestResult:
    """The result a queue document records (``pending`` while it is not final)."""
    if data.get("state") in ("accepted", "rejected"):
        try:
            return IngestResult.from_json({**data, "bundle": bundle})
        except ValueError as exc:
            return IngestResult(bundle, "rejected", f"the recorded result is damaged: {exc}")
    return IngestResult(bundle, "pending")


class StoreIngest:
    """Ingest requests as documents of the remote store's ``ingest_requests``
    collection, which ingestors (``replicator ingest``) poll. Asynchronous: the
    first answer is ``pending``; each later sync reads the document's state.

    The document is keyed by the bundle id and created only if absent, so a request
    sent again adds nothing, and one that reuses a bundle id with other content is
    answered with what the queue recorded for the first (it is never applied)."""

    def __init__(self, store: RemoteStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"StoreIngest({self.store!r})"

    def submit(self, request: IngestRequest, device: DeviceRecord) -> IngestResult:
        doc = self.store.get(QUEUE, [request.bundle]).get(request.bundle)
        if doc is None:
            data = {**request.to_json(), "state": "pending"}
            # (a PreconditionFailed: sent before, the answer lost; it is there now)
            with contextlib.suppress(PreconditionFailed):
                self.store.push([Write(QUEUE, request.bundle, data)], device)
            return IngestResult(request.bundle, "pending")
        return result_of(request.bundle, doc.data)


# the protocol this adapter implements, checked by mypy
_is_ingestservice: type[IngestService] = StoreIngest
