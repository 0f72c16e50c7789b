"""Snapshot fuzzing: every damaged byte or field ends in a typed SnapshotError.

Families: every byte of the header flipped, truncations, chunk swaps, drops and
duplicates, manifest field mutations, kdf.json mutations; for a raw key and for
a passphrase. Each case restores into an empty device: it must raise a
``SnapshotError`` (never another exception, never succeed) and leave the
device's database byte-identical, with no temporary file behind. Where the
damage is in the snapshot object, the manifest is re-signed with the key (a
buggy publisher, stronger than any attacker, whose manifest edits the MAC
catches), so the parser, the AEAD and the claims check are what is tested.
CI runs a sample of each family; ``REPLICATOR_SNAPSHOT_FUZZ=full`` runs all.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections import Counter
from pathlib import Path

import attrs
import pytest

from replicator import EmbeddedRemote, Passphrase, SnapshotKey
from replicator.errors import SnapshotError
from replicator.snapshots.crypto import decrypt_stream, encrypt_stream
from replicator.snapshots.manifest import KDF, MANIFEST, read_manifest, resolve_key
from tests.models import Comment, Note

FULL = os.environ.get("REPLICATOR_SNAPSHOT_FUZZ") == "full"
RAW = SnapshotKey(bytes(range(100, 132)))
PHRASE = Passphrase("fuzzing is believing")
COUNTS: Counter[tuple[str, str]] = Counter()

WEIRD = [None, 0, -1, 2**70, 1.5, True, "", "x", "z" * 5000, [], {}, ["a"], {"a": 1}]


@attrs.define
class Lab:
    blobs: object
    key: object
    kek: SnapshotKey
    victim: object
    path: Path
    tmp: Path
    manifest: object
    blob: bytes
    kdf_bytes: bytes | None
    kind: str = ""

    def reset(self) -> None:
        self.blobs.put(self.manifest.key, io.BytesIO(self.blob))
        self.blobs.put(MANIFEST, io.BytesIO(self.manifest.to_json()))
        if self.kdf_bytes is not None:
            self.blobs.put(KDF, io.BytesIO(self.kdf_bytes))

    def put_object(self, data: bytes, *, resign: bool = True) -> None:
        self.blobs.put(self.manifest.key, io.BytesIO(data))
        if resign:
            fixed = attrs.evolve(
                self.manifest, sha256=hashlib.sha256(data).hexdigest(), size=len(data)
            ).signed(self.kek)
            self.blobs.put(MANIFEST, io.BytesIO(fixed.to_json()))

    def refused(self, family: str) -> None:
        before = hashlib.sha256(self.path.read_bytes()).hexdigest()
        try:
            self.victim.restore()
        except SnapshotError:
            pass
        else:
            raise AssertionError(f"{family}: a damaged snapshot restored silently")
        assert hashlib.sha256(self.path.read_bytes()).hexdigest() == before, family
        assert not list(self.tmp.glob(f".{self.path.name}.*")), f"{family}: leftovers"
        COUNTS[(self.kind, family)] += 1
        self.reset()


@pytest.fixture(params=["raw", "passphrase"])
def lab(request, tmp_path, make_device):
    from replicator.stores.directory import DirectoryBlobStore

    key = RAW if request.param == "raw" else PHRASE
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    a = make_device("a", blobs=blobs, key=key)
    with a.bound():
        for i in range(30):
            Comment.create(note=Note.create(title=f"n{i}"), text=f"c{i}")
    a.sync()
    kek, _kdf = resolve_key(blobs, key, create=False)
    manifest = read_manifest(blobs, kek)
    out = io.BytesIO()
    blobs.get(manifest.key, out)
    kdf_bytes = None
    if request.param == "passphrase":
        k = io.BytesIO()
        blobs.get(KDF, k)
        kdf_bytes = k.getvalue()
    victim = make_device("victim", blobs=blobs, key=key)
    lab = Lab(blobs, key, kek, victim, tmp_path / "victim.db", tmp_path, manifest,
              out.getvalue(), kdf_bytes, request.param)  # fmt: skip
    yield lab
    mine = {f: n for (k, f), n in sorted(COUNTS.items()) if k == request.param}
    print(f"\nsnapshot fuzz, {request.param} key, cases so far: {mine}")


@pytest.fixture
def remote(tmp_path):
    return EmbeddedRemote(tmp_path / "remote.db")


def _sample(n: int, default: int) -> range | list[int]:
    if FULL or n <= default:
        return range(n)
    step = max(1, n // default)
    return sorted({*range(0, n, step), n - 1})


def test_every_header_byte_flipped(lab):
    data = lab.blob
    (hlen,) = struct.unpack(">I", data[10:14])
    for i in _sample(14 + hlen, 150):
        for mask in (0x01, 0x80) if FULL else (0x01,):
            damaged = bytearray(data)
            damaged[i] ^= mask
            lab.put_object(bytes(damaged))
            lab.refused("header byte")


def test_truncations_and_appendages(lab):
    data = lab.blob
    for cut in _sample(len(data), 60):
        lab.put_object(data[:cut])
        lab.refused("truncation")
    for tail in (b"\x00", b"\x00\x00\x00\x05hello", data[-64:]):
        lab.put_object(data + tail)
        lab.refused("appendage")


def _rechunk(lab) -> tuple[bytes, list[bytes]]:
    """The same snapshot sealed in 2 KiB chunks (legitimately), as preamble and records."""
    plain = io.BytesIO()
    header = decrypt_stream(io.BytesIO(lab.blob), plain, lab.kek)
    plain.seek(0)
    out = io.BytesIO()
    encrypt_stream(plain, out, lab.kek, header["meta"], kdf=header["kdf"], chunk_size=2048)
    sealed = out.getvalue()
    (hlen,) = struct.unpack(">I", sealed[10:14])
    pos, records = 14 + hlen, []
    while pos < len(sealed):
        (n,) = struct.unpack(">I", sealed[pos : pos + 4])
        records.append(sealed[pos : pos + 4 + n])
        pos += 4 + n
    return sealed[: 14 + hlen], records


def test_chunks_swapped_dropped_duplicated(lab):
    preamble, records = _rechunk(lab)
    assert len(records) >= 4
    lab.put_object(preamble + b"".join(records))
    lab.victim.restore()  # the re-chunked snapshot is valid: the cases below are not
    lab.victim.database.close()
    lab.path.unlink()
    lab.victim = type(lab.victim)(
        type(lab.victim.database)(str(lab.path)), lab.victim.models, lab.victim.remote,
        lab.blobs, lab.key,
    )  # fmt: skip
    n = len(records)
    cases = []
    for i in _sample(n - 1, 12):
        swapped = list(records)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        cases.append(("chunk swap", swapped))
        cases.append(("chunk drop", records[:i] + records[i + 1 :]))
        cases.append(("chunk duplicate", records[: i + 1] + records[i:]))
    cases.append(("last chunk moved first", [records[-1], *records[:-1]]))
    cases.append(("chunk length inflated", [records[0][:3] + b"\xff" + records[0][4:],
                                            *records[1:]]))  # fmt: skip
    for family, recs in cases:
        lab.put_object(preamble + b"".join(recs))
        lab.refused(family)


def test_manifest_field_mutations(lab):
    base = json.loads(lab.manifest.to_json())
    for field in sorted(base):
        for value in WEIRD if FULL else WEIRD[::2]:
            if base[field] == value:
                continue
            lab.blobs.put(MANIFEST, io.BytesIO(json.dumps({**base, field: value}).encode()))
            lab.refused("manifest field")
        lab.blobs.put(MANIFEST, io.BytesIO(json.dumps({k: v for k, v in base.items()
                                                        if k != field}).encode()))  # fmt: skip
        lab.refused("manifest field missing")
    for raw in (b"", b"{", b"[]", b'"text"', b"null", b"\xff\xfe", b"{" * 100000):
        lab.blobs.put(MANIFEST, io.BytesIO(raw))
        lab.refused("manifest not a map")
    lab.blobs.put(MANIFEST, io.BytesIO(b" " * (2 << 20)))
    lab.refused("manifest huge")


@pytest.mark.parametrize("lab", ["passphrase"], indirect=True)  # a raw key has no kdf.json
def test_kdf_json_mutations(lab):
    base = json.loads(lab.kdf_bytes)
    mutations = [
        {"n": 2, "r": 1},
        {"n": 2**14},
        {"r": 7},
        {"p": 0},
        {"n": 2**40},
        {"n": 2**20, "r": 64},
        {"n": 3 * 2**15},
        {"salt": "c2hvcnQ="},
        {"salt": "not base64!"},
        {"alg": "md5"},
        {"kcv": "0" * 16},
        {"salt": base["salt"][::-1]},
    ]
    for field in ("n", "r", "p", "salt", "kcv"):
        mutations += [{field: v} for v in (WEIRD if FULL else WEIRD[::3])]
    for change in mutations:
        data = {**base, **change}
        lab.blobs.put(KDF, io.BytesIO(json.dumps(data).encode()))
        lab.refused("kdf.json field")
    for raw in (b"", b"[]", b"nope", b"{}"):
        lab.blobs.put(KDF, io.BytesIO(raw))
        lab.refused("kdf.json not a map")
    lab.blobs.delete(KDF)
    lab.refused("kdf.json missing")
