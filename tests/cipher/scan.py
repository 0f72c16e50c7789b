"""Looking for plaintext: every file under a folder, searched for marker values in every
encoding an app's bytes could take on disk (UTF-8, UTF-16, JSON-escaped, base64), and
inside every gzip, zlib or zstd stream found in a file."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import zstandard


def encodings(marker: str) -> list[bytes]:
    forms = {
        marker.encode("utf-8"),
        marker.encode("utf-16-le"),
        marker.encode("utf-16-be"),
        json.dumps(marker).encode()[1:-1],
        json.dumps(marker, ensure_ascii=True).encode()[1:-1],
    }
    raw = marker.encode()
    for shift in range(3):  # base64 of the marker at any alignment inside a longer text
        chunk = base64.b64encode(b"\0" * shift + raw)[4:-4]
        if len(chunk) >= 8:
            forms.add(chunk)
    return sorted(forms)


def _unpacked(data: bytes) -> Iterable[bytes]:
    """``data``, and whatever decompresses from a gzip, zlib or zstd stream starting
    anywhere in it (a stream may start mid-file, or be cut short by a kill)."""
    yield data
    for magic, unpack in (
        (b"\x1f\x8b", lambda b: zlib.decompressobj(31).decompress(b)),
        (b"\x28\xb5\x2f\xfd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
        (b"\x78\x9c", lambda b: zlib.decompressobj().decompress(b)),
        (b"\x78\xda", lambda b: zlib.decompressobj().decompress(b)),
    ):
        at = data.find(magic)
        while at >= 0:
            with contextlib.suppress(zlib.error, zstandard.ZstdError, OSError, EOFError):
                yield unpack(data[at:])
            at = data.find(magic, at + 1)
    with contextlib.suppress(OSError, EOFError, zlib.error):
        yield gzip.decompress(data)


def files_under(folders: Sequence[Path]) -> list[Path]:
    return sorted({p for folder in folders for p in Path(folder).rglob("*") if p.is_file()})


def markers_found(
    folder: Path, markers: Sequence[str], *, only: Sequence[Path] | None = None
) -> list[tuple[str, str]]:
    """(file, marker) for every marker found in a file under ``folder`` (or in ``only``)."""
    found = []
    forms = {m: encodings(m) for m in markers}
    for path in only if only is not None else files_under([folder]):
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:  # removed while we looked
            continue
        for blob in _unpacked(data):
            for marker, encoded in forms.items():
                if any(e in blob for e in encoded):
                    found.append((str(path), marker))
    return sorted(set(found))
