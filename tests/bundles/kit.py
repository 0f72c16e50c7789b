"""What the ingest service's tests share: a campaign service (a real ingestor on a
real bucket and an embedded remote) and bundles made by hand, as a hostile collector
makes them: any rows, any header, under any key, with a checksum that matches."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import time
from pathlib import Path
from typing import Any

from replicator import DirectoryBlobStore, EmbeddedRemote, Ingestor, IngestRequest, IngestResult
from replicator.bundles.format import FORMAT
from replicator.codec import encode_json
from replicator.model import remote_columns
from tests.campaign_models import Household

#: the service's clock in these tests: 2027-01-15 08:00:00 UTC
NOW = 1_800_000_000.0
NOW_TEXT = "2027-01-15 08:00:00"
#: a device's stamp, before NOW
WHEN = "2026-11-23 10:00:00.123456"
#: what the campaign service takes: its upload-only collections
TAKEN = [Household]
_numbers = itertools.count(1)


def row(i: int, **over: Any) -> dict[str, Any]:
    """A household row in SQLite form, as a device bundles it."""
    return {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "head": f"head {i}",
        "members": 1 + i % 7,
        "village": "north",
        "createdOn": WHEN,
        "updatedOn": WHEN,
        "updatedBy": "collector-1",
        **over,
    }


def bundle_bytes(
    lines: list[Any],
    *,
    bundle: str,
    device: str,
    collection: str = "households",
    **header: Any,
) -> bytes:
    """A gzip'd bundle of ``lines`` (rows, or raw text lines given as ``str``/``bytes``),
    its header naming ``bundle``, ``device``, ``collection`` and the count of lines,
    overridden by ``header``."""
    head = {
        "format": FORMAT,
        "bundle": bundle,
        "device": device,
        "collection": collection,
        "count": len(lines),
        "columns": remote_columns(Household),
        **header,
    }
    out = [encode_json(head).encode()]
    for line in lines:
        if isinstance(line, str):
            line = line.encode()
        out.append(line if isinstance(line, bytes) else encode_json(line).encode())
    return gzip.compress(b"\n".join(out) + b"\n", mtime=0)


def put_registrations(
    bucket: Any, folder: str, device: str, rows: list[dict[str, Any]]
) -> IngestRequest:
    """A bundle of ``rows`` of tests/scope_models.py's registrations from ``device``, put
    in ``bucket`` under ``folder`` (a user's, ``users/<uid>/``); its request."""
    from tests.scope_models import Registration

    bundle = f"b-{time.time_ns()}"
    data = bundle_bytes(
        rows,
        bundle=bundle,
        device=device,
        collection="registrations",
        columns=remote_columns(Registration),
    )
    key = f"bundles/{device}/{bundle}.ndjson.gz"
    bucket.put(f"{folder}{key}", io.BytesIO(data))
    return IngestRequest(
        bundle=bundle,
        key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        count=len(rows),
        collection="registrations",
        device=device,
    )


class Desk:
    """The campaign service, and what a collector (honest or not) does to it."""

    def __init__(self, tmp_path: Path, **kw: Any) -> None:
        self.blobs = DirectoryBlobStore(tmp_path / "bucket")
        self.remote = EmbeddedRemote(tmp_path / "remote.db")
        kw.setdefault("clock", lambda: NOW)
        self.ingestor = Ingestor(self.blobs, self.remote, TAKEN, name="desk", **kw)

    def put(
        self,
        data: bytes,
        *,
        device: str,
        bundle: str | None = None,
        key: str | None = None,
        collection: str = "households",
        count: int = 1,
    ) -> IngestRequest:
        """Put ``data`` in the bucket (under the device's folder unless ``key`` says
        otherwise) and return the request naming it."""
        bundle = bundle or f"b{next(_numbers)}"
        key = key or f"bundles/{device}/{bundle}.ndjson.gz"
        self.blobs.put(key, io.BytesIO(data))
        return IngestRequest(
            bundle=bundle,
            key=key,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            count=count,
            collection=collection,
            device=device,
        )

    def request(self, lines: list[Any], *, device: str, **header: Any) -> IngestRequest:
        """A bundle of ``lines`` from ``device``, put in the bucket, and its request."""
        bundle = f"b{next(_numbers)}"
        data = bundle_bytes(lines, bundle=bundle, device=device, **header)
        collection = header.get("collection", "households")
        return self.put(data, device=device, bundle=bundle, collection=collection, count=len(lines))

    def send(self, lines: list[Any], *, device: str, **header: Any) -> IngestResult:
        """Send ``lines`` as ``device``'s bundle; the service's answer."""
        return self.ingestor.submit(self.request(lines, device=device, **header))

    def stored(self, collection: str = "households") -> dict[str, Any]:
        return {i: dict(d.data) for i, d in self.remote.all_docs(collection).items()}
