"""Storage grants: devices reach S3 without bucket keys.

A device holds no S3 credentials. It asks the service (``POST /storage/sign``), with
its user's Firebase ID token, to sign the few S3 requests it is about to make; the
service verifies the token, maps each *relative* key to the user's own folder
(``users/{uid}/...``), and answers presigned requests that S3 honours only as signed
(method, key, conditions, checksum) and only until they expire. The device side is
``replicator.stores.granted.GrantedBlobStore``; the wire format is
``replicator.stores.grant_ops``. See docs/notes/scoped-storage.md for why presigned
requests rather than STS credentials, and docs/guides/deploy-aws.md for AWS.

* :class:`Signer`: the user's ops → signed requests (boto3's
  ``generate_presigned_url`` with the service's client);
* :func:`storage_routes`: the Starlette route, for the ingest service's app
  (``IngestServer(..., routes=storage_routes(signer, verifier))``);
* :func:`grants_app`: an app serving only the grants;
* ``replicator.grants.members.FirestoreMembers``: the ``members`` of a Signer that
  grants scopes' folders (``scopes/{scopeId}/``) to their members, read from Firestore
  (it needs ``replicator[firestore]`` too).

It needs boto3 and starlette/uvicorn: ``pip install 'replicator[s3,service]'``. The
device side needs neither (httpx only).
"""

from __future__ import annotations

from .routes import grants_app, storage_routes
from .signer import EXPIRES, Refused, Signer

__all__ = ["EXPIRES", "Refused", "Signer", "grants_app", "storage_routes"]
