"""The ingest service under a crowd: N devices posting their ingest requests at once.

``replicator ingest --serve 127.0.0.1:PORT`` runs as its own process, as it is
deployed (uvicorn, per-device tokens from ``[service] device_tokens``, an embedded
remote and a directory bucket in a temporary folder). Each device's bundles (``--rows``
rows each) are put in the bucket first, as devices do before they ask. Then every
device, each from its own thread with its own connection, waits at a barrier and
posts its ``--requests`` requests one after another, all devices at once. Printed:
the requests answered and their states, the transport errors (connections reset or
refused, timeouts), the latency of each request (p50, p99, max), and requests per
second over the whole crowd; then, for scale, the same work submitted to an
``Ingestor`` in this process, one request after another, without HTTP.

usage: python bench/bench_ingest_service.py [--devices N] [--requests R] [--rows K]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import peewee

from replicator import DirectoryBlobStore, EmbeddedRemote, Ingestor, IngestRequest, SyncModel
from replicator.bundles.format import bundle_header, pack, put_once
from replicator.codec import encode_json
from replicator.testing import free_port

MODELS = """
import peewee
from replicator import SyncModel


class Household(SyncModel):
    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    village = peewee.TextField(default="")

    class Meta:
        table_name = "households"
"""
COLUMNS = ["id", "createdOn", "updatedOn", "updatedBy", "head", "members", "village"]


class Household(SyncModel):  # the same model, for the direct submissions
    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    village = peewee.TextField(default="")

    class Meta:
        table_name = "households"


def _requests(place: Path, devices: list[str], per_device: int, rows: int, tag: str) -> Any:
    """Each device's bundles, put in the bucket; their requests, by device."""
    blobs = DirectoryBlobStore(place / "bucket")
    out: dict[str, list[IngestRequest]] = {}
    for d, device in enumerate(devices):
        out[device] = []
        for r in range(per_device):
            bundle = f"{tag}-{d:04d}-{r:03d}"
            lines = [
                encode_json(
                    {"id": f"{d:08d}-{r:04d}-4000-8000-{tag}{i:011d}"[:36], "head": f"head {i}",
                     "members": 1 + i % 7, "village": "north",
                     "updatedOn": "2026-11-23 10:00:00.123456"}
                ).encode()
                for i in range(rows)
            ]  # fmt: skip
            header = bundle_header(
                bundle=bundle,
                device=device,
                collection="households",
                columns=COLUMNS,
                app_version="1",
                count=rows,
            )
            packed = pack(header, lines)
            key = f"bundles/{device}/{bundle}.ndjson.gz"
            with packed.body:
                put_once(blobs, key, packed.body, packed.sha256)
            out[device].append(
                IngestRequest(bundle, key, packed.sha256, packed.size, rows, "households", device)
            )
    return out


def _start_service(place: Path, tokens: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    (place / "campaign.py").write_text(MODELS)
    (place / "tokens.toml").write_text("".join(f'"{d}" = "{t}"\n' for d, t in tokens.items()))
    (place / "service.toml").write_text(
        'models = "campaign"\n[remote]\nembedded = "remote.db"\n'
        '[bundles]\ncollections = ["households"]\ningest_queue = true\ndirectory = "bucket"\n'
        '[service]\ndevice_tokens = "tokens.toml"\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from replicator.cli import main; main()", "ingest",
         "--config", str(place / "service.toml"), "--serve", f"127.0.0.1:{port}",
         "--poll", "60", "--name", "bench"],
        cwd=place, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{base}/health", timeout=1)
            return proc, f"{base}/ingest"
        except httpx.TransportError:
            if proc.poll() is not None:
                raise SystemExit("the service did not start") from None
            time.sleep(0.1)
    raise SystemExit("the service never answered")


def _crowd(url: str, requests: dict[str, list[IngestRequest]], tokens: dict[str, str]) -> Any:
    """Every device posts its requests, all devices at once; latencies, states, errors."""
    barrier = threading.Barrier(len(requests) + 1)
    latencies: list[float] = []
    states: dict[str, int] = {}
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def device(name: str) -> None:
        with httpx.Client(timeout=120) as client:
            headers = {"Authorization": f"Bearer {tokens[name]}"}
            barrier.wait()
            for request in requests[name]:
                started = time.perf_counter()
                try:
                    answer = client.post(url, json=request.to_json(), headers=headers)
                    state = answer.json().get("state", f"HTTP {answer.status_code}")
                except httpx.TransportError as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    states[state] = states.get(state, 0) + 1

    threads = [threading.Thread(target=device, args=(name,)) for name in requests]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, states, errors


def _direct(place: Path, requests: dict[str, list[IngestRequest]]) -> float:
    """The median time of one request submitted to an Ingestor in this process."""
    ingestor = Ingestor(
        DirectoryBlobStore(place / "bucket"), EmbeddedRemote(place / "direct.db"), [Household]
    )
    times = []
    for batch in requests.values():
        for request in batch:
            started = time.perf_counter()
            ingestor.submit(request)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2, help="requests per device")
    parser.add_argument("--rows", type=int, default=5, help="rows per bundle")
    args = parser.parse_args()
    devices = [f"device-{i:04d}" for i in range(args.devices)]
    tokens = {d: f"token-of-{d}-{os.urandom(8).hex()}" for d in devices}
    with tempfile.TemporaryDirectory() as tmp:
        place = Path(tmp)
        crowd = _requests(place, devices, args.requests, args.rows, "c")
        alone = _requests(place, devices[: min(20, len(devices))], 1, args.rows, "d")
        proc, url = _start_service(place, tokens)
        try:
            wall, latencies, states, errors = _crowd(url, crowd, tokens)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        direct = _direct(place, alone)
    total = args.devices * args.requests
    ms = [x * 1000 for x in latencies]
    print(
        f"ingest service: {args.devices} devices posting at once, {args.requests} requests each"
        f" ({args.rows} rows a bundle), one service process on 127.0.0.1"
    )
    print(f"  requests answered: {len(latencies)} of {total} ({states})")
    print(f"  transport errors (resets, refusals, timeouts): {sum(errors.values())} {errors or ''}")
    print(
        f"  latency: p50 {_quantile(ms, 0.5):.0f} ms, p99 {_quantile(ms, 0.99):.0f} ms,"
        f" max {max(ms, default=float('nan')):.0f} ms"
    )
    print(f"  requests per second: {len(latencies) / wall:.1f} (wall {wall:.2f} s)")
    print(f"  for scale, one request submitted directly (no HTTP): {direct * 1000:.0f} ms")


if __name__ == "__main__":
    main()
