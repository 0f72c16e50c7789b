"""Snapshot benchmarks: restore vs the raw work, creation throughput, peak memory.

* restore of a ~100 MB database through S3 (moto server on 127.0.0.1): the
  engine's restore (download + SHA-256 + AEAD + decompress + integrity check +
  atomic install) vs the raw work (get_object + decrypt + decompress + write),
  and vs that raw work made durable (+ fsync of the file, which the engine's
  commit of the restored database does and the raw work does not);
* snapshot creation throughput (VACUUM INTO + compress + encrypt + upload);
* peak RSS of a process restoring 100 MB and 400 MB databases (flat is the goal).

usage: python bench/bench_snapshot.py [--sizes 100,400]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sqlite3
import statistics
import string
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import peewee
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from replicator import Always, EmbeddedRemote, Replicator, SnapshotKey, SyncModel
from replicator.snapshots.crypto import encrypt_stream
from replicator.snapshots.manifest import read_manifest
from replicator.stores.s3 import S3BlobStore
from replicator.testing import free_port

KEY = SnapshotKey(bytes(range(32)))


class Record(SyncModel):
    name = peewee.TextField()
    body = peewee.TextField()
    n = peewee.IntegerField()

    class Meta:
        table_name = "record"


def make_database(path: Path, megabytes: int) -> None:
    db = peewee.SqliteDatabase(str(path))
    device = Replicator(db, [Record], EmbeddedRemote(path.with_suffix(".remote")))
    rnd = random.Random(7)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(3, 9))) for _ in range(5000)]
    rows_needed = megabytes * 1_000_000 // 720  # a row and its index entries: ~720 bytes
    with device.local.applying():
        batch = []
        for i in range(rows_needed):
            batch.append(
                (
                    f"{rnd.getrandbits(128):032x}",
                    " ".join(rnd.choices(words, k=3)),
                    " ".join(rnd.choices(words, k=70)),
                    i,
                )
            )
            if len(batch) == 5000:
                db.connection().executemany(
                    'INSERT INTO record (id, name, body, n, "isDirty", "serverId", "syncRev")'
                    " VALUES (?, ?, ?, ?, 0, ?, 0)",
                    [(*r, r[0]) for r in batch],
                )
                batch.clear()
        if batch:
            db.connection().executemany(
                'INSERT INTO record (id, name, body, n, "isDirty", "serverId", "syncRev")'
                " VALUES (?, ?, ?, ?, 0, ?, 0)",
                [(*r, r[0]) for r in batch],
            )
    db.close()


def raw_restore(client, bucket: str, key: str, dest: Path, *, durable: bool = False) -> None:
    """The bare minimum: fetch the object, decrypt the chunks, decompress, write
    (``durable``: and make the file durable, as a database commit does)."""
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    start = body.read(14)
    (hlen,) = struct.unpack(">I", start[10:14])
    header_bytes = body.read(hlen)
    header = json.loads(header_bytes)
    import hashlib

    aad = hashlib.sha256(start + header_bytes).digest()
    data_key = AESGCM(KEY.raw).decrypt(
        base64.b64decode(header["wrap_nonce"]),
        base64.b64decode(header["wrapped_key"]),
        b"replicator key check v1",
    )
    prefix = base64.b64decode(header["nonce_prefix"])
    aead = AESGCM(data_key)
    dec = zstandard.ZstdDecompressor().decompressobj()
    with open(dest, "wb") as out:
        index, current = 0, None
        records = []
        while True:
            raw = body.read(4)
            if not raw:
                break
            (n,) = struct.unpack(">I", raw)
            records.append(body.read(n))
            if len(records) == 2:
                current = records.pop(0)
                nonce = prefix + struct.pack(">I", index) + b"\x00"
                out.write(dec.decompress(aead.decrypt(nonce, current, aad)))
                index += 1
        for rec in records:
            nonce = prefix + struct.pack(">I", index) + b"\x01"
            out.write(dec.decompress(aead.decrypt(nonce, rec, aad)))
        if durable:
            out.flush()
            os.fsync(out.fileno())


CHILD = """
import os, resource, sys, peewee
from replicator import EmbeddedRemote, Replicator, SnapshotKey
from replicator.stores.s3 import S3BlobStore
sys.path.insert(0, sys.argv[4])
from bench_snapshot import Record
import boto3
client = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
db = peewee.SqliteDatabase(sys.argv[3])
r = Replicator(db, [Record], EmbeddedRemote(sys.argv[3] + ".remote"),
               S3BlobStore(sys.argv[2], client=client), SnapshotKey(bytes(range(32))))
def hwm():
    # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
base = hwm()
r.restore()
print(base, hwm())
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,400")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for name, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x")):
        os.environ.setdefault(name, value)
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        for size in sizes:
            run(size, client, endpoint, compare=(size == sizes[0]), runs=args.runs)
    finally:
        server.stop()


def raw_create(src: Path, dest: Path, client, bucket: str) -> None:
    """The bare minimum of a snapshot: VACUUM INTO, zstd, AES-GCM, one upload."""
    copy = dest.with_suffix(".copy")
    conn = sqlite3.connect(src)
    conn.execute("VACUUM INTO ?", (str(copy),))
    conn.close()
    with open(copy, "rb") as plain, open(dest, "wb") as sealed:
        encrypt_stream(plain, sealed, KEY, {"raw": True})
    copy.unlink()
    client.upload_file(str(dest), bucket, "raw/" + dest.name)


def _stats(times: list[float]) -> str:
    return f"min {min(times):.2f}s median {statistics.median(times):.2f}s"


def run(size: int, client, endpoint: str, *, compare: bool, runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="replicator-bench-"))
    try:
        _run(size, client, endpoint, compare=compare, runs=runs, tmp=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a run writes about 1.6 GB


def _run(size: int, client, endpoint: str, *, compare: bool, runs: int, tmp: Path) -> None:
    bucket = f"bench{size}"
    client.create_bucket(Bucket=bucket)
    src = tmp / "source.db"
    make_database(src, size)
    db_size = src.stat().st_size
    db = peewee.SqliteDatabase(str(src))
    blobs = S3BlobStore(bucket, client=client)
    device = Replicator(
        db, [Record], EmbeddedRemote(tmp / "source.remote"), blobs, KEY, snapshot_strategy=Always()
    )
    device.sync()  # warms both paths' files and the page cache; registers the device
    manifest = read_manifest(blobs)
    print(f"{db_size / 1e6:.0f} MB database -> {manifest.size / 1e6:.0f} MB snapshot")
    if not compare:
        return _rss(tmp, bucket, endpoint)
    t_raw_make, t_make, t_raw, t_durable, t_engine = [], [], [], [], []
    for i in range(runs):  # alternate which goes first, so neither always finds a warm cache
        order = ("raw", "engine") if i % 2 == 0 else ("engine", "raw")
        for who in order:
            if who == "raw":
                start = time.perf_counter()
                raw_create(src, tmp / f"raw-{i}.snap", client, bucket)
                t_raw_make.append(time.perf_counter() - start)
                start = time.perf_counter()
                raw_restore(client, bucket, manifest.key, tmp / f"raw-{i}.db")
                t_raw.append(time.perf_counter() - start)
                start = time.perf_counter()
                raw_restore(client, bucket, manifest.key, tmp / f"durable-{i}.db", durable=True)
                t_durable.append(time.perf_counter() - start)
            else:
                with device.bound():  # one change, so Big Brother publishes anew
                    Record.update(n=Record.n + 1).where(Record.n == i).execute()
                start = time.perf_counter()
                device.sync()
                t_make.append(time.perf_counter() - start)
                manifest = read_manifest(blobs)
                target = Replicator(
                    peewee.SqliteDatabase(str(tmp / f"engine-{i}.db")),
                    [Record],
                    EmbeddedRemote(tmp / f"engine-{i}.remote"),
                    blobs,
                    KEY,
                )
                start = time.perf_counter()
                target.login()  # restore, then a sync that finds nothing missing
                t_engine.append(time.perf_counter() - start)
                target.database.close()
    mb = db_size / 1e6
    print(
        f"  snapshot creation: raw (VACUUM INTO + zstd + AES-GCM + upload) {_stats(t_raw_make)};"
        f" engine sync+publish {_stats(t_make)}"
        f" = {mb / statistics.median(t_make):.0f} MB/s;"
        f" ratio {statistics.median(t_make) / statistics.median(t_raw_make):.2f}x"
        f" (min {min(t_make) / min(t_raw_make):.2f}x)"
    )
    print(
        f"  restore: raw (get + AES-GCM + zstd + write) {_stats(t_raw)};"
        f" engine login() {_stats(t_engine)};"
        f" ratio {statistics.median(t_engine) / statistics.median(t_raw):.2f}x"
        f" (min {min(t_engine) / min(t_raw):.2f}x) over {runs} runs"
    )
    print(
        f"  restore against the raw work made durable (+ fsync, as the engine's commit):"
        f" {_stats(t_durable)};"
        f" ratio {statistics.median(t_engine) / statistics.median(t_durable):.2f}x"
        f" (min {min(t_engine) / min(t_durable):.2f}x)"
    )
    return _rss(tmp, bucket, endpoint)


def _rss(tmp: Path, bucket: str, endpoint: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            endpoint,
            bucket,
            str(tmp / "child.db"),
            str(Path(__file__).parent),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    base, peak = int(out[0]), int(out[1])
    print(f"  restore peak RSS: {peak} MB (process start {base} MB, +{peak - base} MB)")


if __name__ == "__main__":
    main()
