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
  another format, a line that is not JSON (bad UTF-8, a tagged value of the wrong
  type, nesting deeper than the decoder goes, a line longer than the reader allows).
  Rows come back decoded but unchecked: the service checks them against its models;
* reading streams: the service never holds more than one compressed chunk, one
  expanded chunk and one line of a bundle (:class:`BundleReader`), so its memory
  does not grow with a bundle's size, and a compression bomb is refused at the
  limit, not after expanding it.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

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
    compressed in memory: the lines are in memory already and the compressed body is
    smaller, and a temporary file would put the device's rows on its disk in plain
    (gzip) form, beside a database that may be encrypted."""
    body: BinaryIO = io.BytesIO()
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


#: compressed bytes read, and expanded bytes produced, at a time
CHUNK = 64 << 10
_WS = re.compile(r"[ \t\n\r]*")
#: plain JSON (an outbox message's events are the app's JSON, not tagged row values)
_PLAIN = json.JSONDecoder()


def expand(source: BinaryIO, limit: int) -> Iterator[bytes]:
    """The expanded bytes of the one whole gzip stream ``source`` holds, in pieces of at
    most :data:`CHUNK` bytes, read as they are needed: memory stays flat whatever the
    stream's size. ``ValueError`` for more than ``limit`` expanded bytes (a compression
    bomb, refused as soon as it passes the limit), a truncated stream, bytes after it,
    or something that is not gzip."""
    unpack = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    while chunk := source.read(CHUNK):
        while True:
            try:
                out = unpack.decompress(chunk, CHUNK)
            except zlib.error as exc:
                raise ValueError(f"not a gzip file ({exc})") from None
            total += len(out)
            if total > limit:
                raise ValueError(f"it expands past {limit} bytes")
            if out:
                yield out
            if unpack.eof:
                if unpack.unused_data or source.read(1):
                    raise ValueError("bytes follow the end of the compressed data")
                return
            chunk = unpack.unconsumed_tail
            if not chunk and len(out) < CHUNK:
                break  # this piece is used up: read the next one
    raise ValueError("it ends early (truncated)")


def split_lines(pieces: Iterable[bytes], max_line: int) -> Iterator[bytes]:
    """The newline-separated lines of ``pieces`` (without their newlines; a last line
    without one counts), never holding more than one line: ``ValueError`` as soon as a
    line passes ``max_line`` bytes."""
    pending = bytearray()
    number = 1
    for piece in pieces:
        start = 0
        while (end := piece.find(b"\n", start)) >= 0:
            line = piece[start:end]
            if pending:
                pending += line
                line, pending = bytes(pending), bytearray()
            if len(line) > max_line:
                raise ValueError(f"line {number} is longer than {max_line} bytes")
            yield line
            number += 1
            start = end + 1
        pending += piece[start:]
        if len(pending) > max_line:
            raise ValueError(f"line {number} is longer than {max_line} bytes")
    if pending:
        yield bytes(pending)


def decode_line(line: bytes, what: str) -> Any:
    """One bundle line decoded (``codec.decode_json``). Anything that is not well-formed
    JSON of the row form is a ``ValueError`` naming ``what``: bad UTF-8 or syntax, a
    tagged value of the wrong type (``{"$bytes": 5}``), nesting deeper than the
    decoder goes, a number Python refuses to read."""
    try:
        return decode_json(line)
    except RecursionError:
        raise ValueError(f"{what} nests too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{what} is not JSON ({str(exc)[:80]})") from None


class BundleReader:
    """A bundle read as a stream: :meth:`header`, then :meth:`rows`, one line at a time.

    Nothing is read ahead, so a reader that stops early (a header that disagrees with
    the request, more rows than announced) stops expanding there. Every failure is a
    ``ValueError`` saying what is wrong. ``limit`` bounds the expanded bytes,
    ``max_line`` one line."""

    def __init__(self, source: BinaryIO, *, limit: int, max_line: int) -> None:
        self._lines = enumerate(split_lines(expand(source, limit), max_line), start=1)

    def header(self) -> dict[str, Any]:
        """The first line: an object naming :data:`FORMAT`."""
        first = next(self._lines, None)
        if first is None:
            raise ValueError("the bundle is empty")
        header = decode_line(first[1], "the header")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"the header does not name the format {FORMAT}")
        return header

    def rows(self) -> Iterator[tuple[int, Any]]:
        """Each further line's number and decoded value (not yet checked)."""
        for number, line in self._lines:
            yield number, decode_line(line, f"line {number}")


def read_bundle(data: bytes, *, limit: int = 1 << 30) -> tuple[dict[str, Any], list[Any]]:
    """A whole bundle's header and rows (each a decoded JSON value, not yet checked),
    for tools and tests; the service reads bundles as streams (:class:`BundleReader`).
    ``ValueError`` when it is not one whole, well-formed bundle, or expands past
    ``limit`` bytes."""
    reader = BundleReader(io.BytesIO(data), limit=limit, max_line=limit)
    header = reader.header()
    return header, [row for _, row in reader.rows()]


def read_message(source: BinaryIO, *, limit: int, most: int) -> tuple[dict[str, Any], list[Any]]:
    """An outbox message (``{"msg_id", "type", "events": [...]}``): its fields other
    than ``events``, and its events. The events are decoded one at a time and counted as
    they are, so a message of more than ``most`` of them (a bomb of empty objects) is
    refused at the first one too many, before the rest are built. ``ValueError`` for
    anything else that is not such a message."""
    try:
        text = b"".join(expand(source, limit)).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("it is not UTF-8 text") from None
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        raise ValueError("an outbox message is a JSON object")
    fields: dict[str, Any] = {}
    events: list[Any] | None = None
    at = _skip(text, at + 1)
    while text[at : at + 1] != "}":
        key, at = _json_at(text, at)
        if not isinstance(key, str) or text[at : at + 1] != ":":
            raise ValueError("an outbox message is a JSON object")
        at = _skip(text, at + 1)
        if key == "events" and text[at : at + 1] == "[":
            events, at = _events_at(text, at, most)
        else:
            fields[key], at = _json_at(text, at)
        if text[at : at + 1] == ",":
            at = _skip(text, at + 1)
            if text[at : at + 1] == "}":
                raise ValueError("the message is not JSON (a comma before '}')")
        elif text[at : at + 1] != "}":
            raise ValueError("an outbox message is a JSON object")
    if _skip(text, at + 1) != len(text):
        raise ValueError("data follows the message")
    if events is None:
        raise ValueError("an outbox message is an object with a list of events")
    return fields, events


def _skip(text: str, at: int) -> int:
    """Where the first character after the whitespace at ``at`` is."""
    found = _WS.match(text, at)
    return found.end() if found else at


def _json_at(text: str, at: int) -> tuple[Any, int]:
    """The JSON value at ``at`` and where the next token starts."""
    try:
        value, end = _PLAIN.raw_decode(text, at)
    except RecursionError:
        raise ValueError("the message nests too deeply") from None
    except ValueError as exc:
        raise ValueError(f"the message is not JSON ({str(exc)[:80]})") from None
    return value, _skip(text, end)


def _events_at(text: str, at: int, most: int) -> tuple[list[Any], int]:
    """The array of events opening at ``at``, decoded one by one, at most ``most``."""
    events: list[Any] = []
    at = _skip(text, at + 1)
    if text[at : at + 1] == "]":
        return events, _skip(text, at + 1)
    while True:
        if len(events) == most:
            raise ValueError(f"it holds more than the {most} events announced")
        event, at = _json_at(text, at)
        events.append(event)
        if text[at : at + 1] == "]":
            return events, _skip(text, at + 1)
        if text[at : at + 1] != ",":
            raise ValueError("the events are not a JSON array")
        at = _skip(text, at + 1)
