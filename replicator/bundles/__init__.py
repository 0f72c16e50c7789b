"""Upload-only collections sent as checksummed bundles.

``format`` is what a bundle is on the wire, ``send`` the device's step of a sync,
``sink`` an outbox sink that sends messages the same way, and ``ingest`` the service
that verifies them and applies their rows (``rows``), served over HTTP by ``service``
to the callers ``auth`` identifies. The seam between senders and the service (the
request, the result, the ``IngestService`` protocol and its implementations) is in
``replicator.stores``, which imports no feature."""

from .auth import Caller, DeviceTokens, FirstOf, Refused, SignedInCallers
from .ingest import Ingestor
from .send import Bundles, BundleTally
from .service import IngestServer
from .sink import BundleSink

__all__ = [
    "BundleSink",
    "BundleTally",
    "Bundles",
    "Caller",
    "DeviceTokens",
    "FirstOf",
    "IngestServer",
    "Ingestor",
    "Refused",
    "SignedInCallers",
]
