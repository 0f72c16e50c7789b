"""Upload-only collections sent as checksummed bundles.

``format`` is what a bundle is on the wire, ``send`` the device's step of a sync,
``sink`` an outbox sink that sends messages the same way, and ``ingest`` the service
that verifies and applies them. The seam between senders and the service (the
request, the result, the ``IngestService`` protocol and its implementations) is in
``replicator.stores``, which imports no feature."""

from .ingest import Ingestor, IngestServer
from .send import Bundles, BundleTally
from .sink import BundleSink

__all__ = ["BundleSink", "BundleTally", "Bundles", "IngestServer", "Ingestor"]
