"""What a bundle is on the wire, shared by the device that makes one and the service
that reads it.

A bundle is one gzip stream of newline-delimited JSON: a header line (:data:`FORMAT`,
bundle id, device, collection, columns, app version, row count), then one row per
line in SQLite form (``codec.encode_json``). An outbox message sent as a bundle
(``BundleSink``) is instead one gzip'd JSON object ``{msg_id, type, events}``, ingested
under the collection ``outbox:<type>`` (:data:`EVENTS`).

Invariants:

* packing is deterministic (no timestamp in the gzip header), so the same header and
  rows give the same bytes and the same SHA-256;
* a bundle object is written once: :func:`put_once` never replaces what a key holds,
  so a retried put is recognised by its checksum and other bytes are never
  overwritten;
* reading refuses (``ValueError``) anything that is not one whole, well-formed bundle:
  a compression bomb, a truncated stream, bytes after the stream, a header naming
  another format, a line that is not JSON. Rows come back decoded but unchecked: the
  service checks them against its models.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from collections.abc import Sequence
from typing import Any, BinaryIO, cast

import attrs

from ..codec import decode_json, encode_json
from ..errors import PreconditionFailed
from ..stores.base import BlobStore, hash_rest

#: the first line of every bundle names this format
FORMAT = "replicator-bundle/1"
#: the collection an outbox type's events are ingested under: ``outbox:<TYPE>``
EVENTS = "outbox:"


def bundle_header(
    *,
    bundle: str,
    device: str,
    collection: str,
    columns: Sequence[str],
    app_version: Any,
    count: int,
) -> dict[str, Any]:
    """A bundle's header line: what the service checks against the request (bundle,
    device, collection, count) and against its models (columns)."""
    return {
        "format": FORMAT,
        "bundle": bundle,
        "device": device,
        "collection": collection,
        "columns": list(columns),
        "appVersion": app_version,
        "count": count,
    }


@attrs.frozen
class Packed:
    """A bundle's compressed bytes, rewound, with their SHA-256 (hex) and length. The
    body may be a temporary file: whoever packs it closes it."""

    body: BinaryIO
    sha256: str
    size: int


def pack(header: dict[str, Any], lines: Sequence[bytes]) -> Packed:
    """The bundle of ``header`` and ``lines`` (each an encoded row, without its newline),
    compressed into a temporary file that stays in memory up to 32 MiB."""
    # (a binary file object; typeshed does not call a SpooledTemporaryFile a BinaryIO)
    spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 - Packed's owner closes it
    body = cast(BinaryIO, spool)
    with gzip.GzipFile(fileobj=body, mode="wb", mtime=0, compresslevel=6) as packed:
        packed.write(encode_json(header).encode() + b"\n")
        for line in lines:
            packed.write(line + b"\n")
    body.seek(0)
    digest, length = hash_rest(body)
    body.seek(0)
    return Packed(body, digest.hexdigest(), length)


def put_once(blobs: BlobStore, key: str, body: BinaryIO, sha256: str) -> bool:
    """Store ``body`` under ``key`` unless something is there already (checked against
    ``sha256`` by the store); True when ``key`` now holds these bytes, whether this put
    wrote them or an earlier one did (a retry), False when it holds other bytes."""
    try:
        blobs.put(key, body, if_none_match=True, sha256=sha256)
    except PreconditionFailed:
        info = blobs.head(key)
        return info is not None and info.sha256 == sha256
    return True


def gunzip(data: bytes, limit: int) -> bytes:
    """One whole gzip stream expanded, refusing (``ValueError``) more than ``limit``
    bytes of output (a compression bomb), a truncated stream and trailing bytes."""
    unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = unpack.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"not a gzip file ({exc})") from None
    if len(text) > limit or unpack.unconsumed_tail:
        raise ValueError(f"it expands past {limit} bytes")
    if not unpack.eof:
        raise ValueError("it ends early (truncated)")
    if unpack.unused_data:
        raise ValueError("bytes follow the end of the compressed data")
    return text


def read_bundle(data: bytes, *, limit: int = 1 << 30) -> tuple[dict[str, Any], list[Any]]:
    """A bundle's header and rows (each a decoded JSON value, not yet checked).
    ``ValueError`` when it is not one whole, well-formed bundle, or expands past
    ``limit`` bytes (a compression bomb)."""
    lines = gunzip(data, limit).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if not lines:
        raise ValueError("the bundle is empty")
    try:
        header = decode_json(lines[0])
    except ValueError as exc:
        raise ValueError(f"the header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"the header does not name the format {FORMAT}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        try:
            rows.append(decode_json(line))
        except ValueError:
            raise ValueError(f"line {number} is not JSON") from None
    return header, rows
