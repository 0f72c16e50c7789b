"""The benchmarks run: each one, at a tiny size, ends and prints its ratios.

They measure nothing here (a 2-core CI machine is too noisy for that); this
only keeps them from rotting between the runs the figures of docs/benchmarks.md come from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from replicator.testing import find_jar

BENCH = Path(__file__).resolve().parent.parent / "bench"
NEEDS_EMULATOR = pytest.mark.skipif(
    find_jar() is None, reason="FIRESTORE EMULATOR MISSING (google-cloud-cli-firestore-emulator)"
)


@pytest.mark.parametrize(
    ("script", "args", "expect"),
    [
        ("bench_core.py", ["--rows", "300", "--parents", "20", "--runs", "1",
                           "--upload-rows", "300", "--download-rows", "300"], "download of 300"),
        ("bench_scale.py", ["--small", "300", "--large", "600", "--runs", "1"], "bookkeeping"),
        ("bench_outbox.py", ["--events", "300", "--runs", "1"], "bytes on the wire"),
        ("bench_denied.py", ["--rows", "64", "--denied", "2", "--latency", "0", "--runs", "1"],
         "bound for one"),
        ("bench_bundles.py", ["--rows", "300", "--runs", "1", "--latency", "2"], "parallel"),
        ("bench_status.py", ["--writes", "50", "--small", "100", "--large", "300", "--runs", "1"],
         "pending count"),
        ("bench_sqlcipher.py", ["--rows", "300", "--sync-rows", "300", "--megabytes", "1",
                                "--runs", "1"], "restore time"),
        ("bench_ingest_service.py", ["--devices", "10", "--requests", "1", "--rows", "2"],
         "requests per second"),
        ("bench_ingest_signed_in.py", ["--requests", "3", "--rows", "2", "--runs", "1"],
         "signed-in / operator tokens"),
        ("bench_granted.py", ["--mb", "1", "--runs", "1"], "service requests per publishing"),
        pytest.param("bench_scopes.py", ["--scopes", "1,3", "--runs", "1", "--repeat", "1"],
                     "| 3 | 6 (3 + 3) |", marks=NEEDS_EMULATOR),
        pytest.param("bench_scope_grants.py", ["--runs", "1", "--requests", "5"],
                     "scope, uncached", marks=NEEDS_EMULATOR),
    ],
)  # fmt: skip
def test_a_bench_runs_to_its_end(script, args, expect, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expect in result.stdout
