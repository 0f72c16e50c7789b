"""Storage grants on a real S3, for tests and benchmarks: SeaweedFS, the grant service
under uvicorn, and devices that hold no bucket keys.

:class:`GrantedStorage` starts :class:`~replicator.testing.seaweed.SeaweedS3` with the
service's own identity (:data:`SERVICE`: object rights on ``{bucket}/users/*`` and
``{bucket}/scopes/*``, read-only rights on the shared folders, nothing else), makes the
bucket as admin, and serves ``replicator.grants``' route beside an ingest API
(``IngestServer``) on 127.0.0.1, verifying ID tokens as the Auth emulator makes them
(unsigned). ``store(uid)`` is a device's
:class:`~replicator.stores.granted.GrantedBlobStore` for user ``uid``
(:class:`~replicator.testing.tokens.MockIdTokens`); ``admin(uid)`` the same folder
through bucket credentials, to look behind a device's back.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .seaweed import Identity, SeaweedS3
from .tokens import MockIdTokens

#: the project whose (unsigned) ID tokens the grant service takes
PROJECT = "demo-grants"
#: the S3 identity of the grant service (its actions are set per bucket by GrantedStorage)
SERVICE = Identity("grant-service", "grant-service-key", "grant-service-secret", ())


class GrantedStorage:
    """SeaweedFS and a storage-grant service (see the module's docstring).

    ``shared`` maps read-only spaces to folders of the bucket; ``expires`` is each
    grant's lifetime (seconds); ``collections`` the models the ingest API beside takes
    bundles of, for ``uid`` (``ingest_uid``)."""

    def __init__(
        self,
        weed: str,
        *,
        bucket: str = "granted",
        shared: dict[str, str] | None = None,
        expires: int = 900,
        collections: Sequence[Any] = (),
        ingest_uid: str = "nobody",
    ) -> None:
        self.bucket = bucket
        self.shared = dict(shared or {"reference": "reference"})
        folders = [f"{bucket}/users/*", f"{bucket}/scopes/*"]
        readonly = [f"{bucket}/{folder}/*" for folder in self.shared.values()]
        self.identity = Identity(
            SERVICE.name,
            SERVICE.access_key,
            SERVICE.secret_key,
            (
                *(f"{a}:{f}" for a in ("Read", "Write", "List") for f in folders),
                *(f"{a}:{f}" for a in ("Read", "List") for f in readonly),
            ),
        )
        self.seaweed = SeaweedS3(weed, identities=[self.identity])
        self.expires = expires
        self.collections = list(collections)
        self.ingest_uid = ingest_uid
        self.folder: Path | None = None
        self.server: Any = None

    def start(self) -> GrantedStorage:
        from ..bundles.ingest import Ingestor
        from ..grants import Signer
        from ..stores.embedded import EmbeddedRemote

        self.seaweed.start()
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="grants-"))
            self.seaweed.client().create_bucket(Bucket=self.bucket)
            self.service_client = self.seaweed.client(self.identity)
            self.signer = Signer(
                self.service_client, self.bucket, shared=self.shared, expires=self.expires
            )
            self.ingestor = Ingestor(
                self.s3(self.ingest_uid, self.service_client),
                EmbeddedRemote(self.folder / "remote.db"),
                self.collections,
            )
            self.server = self.serve(self.signer)
        except BaseException:
            self.stop()
            raise
        self.url: str = self.server.base_url
        return self

    def serve(self, signer: Any, project: str = PROJECT) -> Any:
        """The ingest API with ``signer``'s grant route, under uvicorn on 127.0.0.1
        (an ``IngestServer``: its ``base_url`` is a device's ``service_url``; close it),
        taking the (unsigned, emulator's) ID tokens of ``project``."""
        from ..auth.verify import IdTokenVerifier
        from ..grants import storage_routes

        verifier = IdTokenVerifier(project, emulator=True)
        return self.ingestor.serve(routes=storage_routes(signer, verifier))

    def tokens(self, uid: str, **options: Any) -> MockIdTokens:
        return MockIdTokens(uid, PROJECT, **options)

    def store(self, uid: str, **options: Any) -> Any:
        """A device's blob store for ``uid``, through grants only."""
        from ..stores.granted import GrantedBlobStore

        return GrantedBlobStore(self.url, self.tokens(uid), **options)

    def s3(self, uid: str, client: Any = None) -> Any:
        """``uid``'s folder through bucket credentials (admin's, or ``client``'s)."""
        from ..stores.s3 import S3BlobStore

        return S3BlobStore(self.bucket, f"users/{uid}", client=client or self.seaweed.client())

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.seaweed.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> GrantedStorage:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
