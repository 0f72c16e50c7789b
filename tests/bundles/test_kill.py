"""kill -9 of a collector in the middle of its bundle syncs, and of ingestors in the
middle of applying, loses no registration and leaves no stale version: at the end
the remote holds exactly the collector's rows, each at its latest content.

REPLICATOR_BUNDLE_KILL_ROUNDS sets the number of rounds (default 6).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from replicator import DirectoryBlobStore, EmbeddedRemote
from tests.helpers import TESTS, WORKERS

ROUNDS = int(os.environ.get("REPLICATOR_BUNDLE_KILL_ROUNDS", "6"))
WORKER = WORKERS / "bundle_worker.py"
MODELS_SRC = (TESTS / "campaign_models.py").read_text()


def _ingestor_cmd(place: Path, name: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from replicator.cli import main; main()",
        "ingest",
        "--config",
        str(place / "service.toml"),
        "--poll",
        "0.05",
        "--lease",
        "1",
        "--name",
        name,
    ]


def test_kill_9_of_collectors_and_ingestors_loses_nothing(tmp_path):
    rng = random.Random(int(os.environ.get("REPLICATOR_BUNDLE_KILL_SEED", "0")) or None)
    (tmp_path / "campaign.py").write_text(MODELS_SRC)
    (tmp_path / "service.toml").write_text(
        'models = "campaign:MODELS"\n[remote]\nembedded = "remote.db"\n'
        '[bundles]\ncollections = ["households"]\ningest_queue = true\ndirectory = "bucket"\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    killed = 0
    for round_ in range(ROUNDS):
        collector = subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path), str(rng.randrange(10**6))],
            env=env,
            stderr=subprocess.PIPE,
        )
        ingestors = [
            subprocess.Popen(
                _ingestor_cmd(tmp_path, f"i{round_}-{k}"),
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for k in range(2)
        ]
        time.sleep(rng.uniform(0.5, 2.0))
        for proc in [collector, *ingestors]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert killed >= ROUNDS  # the collector at least was killed each round

    # the next start: claims of the dead ingestors lapse (1 s), a fresh one finishes
    time.sleep(1.1)
    final = subprocess.Popen(
        _ingestor_cmd(tmp_path, "final"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        done = subprocess.run(
            [sys.executable, str(WORKER), str(tmp_path), "0", "final"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        final.send_signal(signal.SIGTERM)
        final.wait(timeout=20)

    import sqlite3

    local = sqlite3.connect(tmp_path / "collector.db")
    rows = {i: (h, m) for i, h, m in local.execute("SELECT id, head, members FROM households")}
    assert local.execute('SELECT count(*) FROM households WHERE "isDirty" = 1').fetchone() == (0,)
    assert local.execute("SELECT count(*) FROM replicator_bundles").fetchone() == (0,)
    local.close()
    docs = EmbeddedRemote(tmp_path / "remote.db").all_docs("households")
    remote = {i: (d.data["head"], d.data["members"]) for i, d in docs.items()}
    assert len(rows) > 0
    assert remote == rows  # nothing lost, nothing stale, nothing extra
    # every bundle the collector made is decided, none twice in the bucket
    queue = EmbeddedRemote(tmp_path / "remote.db").all_docs("ingest_requests")
    assert all(d.data.get("state") in ("accepted", "rejected") for d in queue.values())
    keys = [b.key for b in DirectoryBlobStore(tmp_path / "bucket").list("bundles/")]
    assert len(keys) == len(set(keys))
