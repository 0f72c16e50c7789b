"""Racing publishers on a real S3 server: devices in processes of their own publish at
the same instant, round after round, on SeaweedFS (which serialises conditional
writes). ``REPLICATOR_RACE_ROUNDS`` (default 3) and ``REPLICATOR_RACE_DEVICES``
(default 8) set the size.

After each round: the manifest names a snapshot whose watermarks no earlier complete
snapshot dominates, it names the snapshot of a device that reported publishing it,
and the only snapshot objects are the ones it keeps. At the end a fresh device
restores and holds exactly the remote's rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import peewee

from replicator import EmbeddedRemote, Replicator
from replicator.snapshots.manifest import read_manifest
from replicator.strategies.snapshot import dominates
from tests.helpers import TESTS, WORKERS, snapshot_rows
from tests.models import MODELS
from tests.snapshots.test_snapshots import KEY

ROUNDS = int(os.environ.get("REPLICATOR_RACE_ROUNDS", "3"))
DEVICES = int(os.environ.get("REPLICATOR_RACE_DEVICES", "8"))


def _wait(folder: Path, pattern: str, count: int, procs: list, timeout: float = 180) -> None:
    until = time.monotonic() + timeout
    while len(list(folder.glob(pattern))) < count:
        dead = [p for p in procs if p.poll() not in (None, 0)]
        assert not dead, dead[0].stderr.read()[-3000:]
        assert time.monotonic() < until, f"timed out waiting for {pattern}"
        time.sleep(0.02)


def test_devices_racing_to_publish_leave_the_freshest_snapshot_and_no_orphan(
    seaweed_blobs, tmp_path, capsys
):
    blobs, folder = seaweed_blobs, tmp_path / "sync"
    folder.mkdir()
    remote_path = tmp_path / "remote.db"
    EmbeddedRemote(remote_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
    }
    endpoint = blobs.client.meta.endpoint_url
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKERS / "publish_worker.py"),
                str(tmp_path / f"d{k}.db"),
                str(remote_path),
                endpoint,
                blobs.bucket,
                f"d{k}",
                str(ROUNDS),
                str(folder),
                str(DEVICES),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(DEVICES)
    ]
    racer_blobs = type(blobs)(blobs.bucket, prefix="users/racers", client=blobs.client)
    complete: list[dict[str, str]] = []  # the watermarks of every snapshot published so far
    manifests = []
    try:
        for r in range(ROUNDS):
            (folder / f"go-{r}").touch()
            _wait(folder, f"done-{r}-*", DEVICES, procs)
            manifest = read_manifest(racer_blobs, KEY)
            for earlier in complete:
                assert not dominates(earlier, manifest.watermarks), (r, earlier)
            complete.append(dict(manifest.watermarks))
            manifests.append(manifest)
            objects = {i.key for i in racer_blobs.list("snapshots/") if i.key.endswith(".snap")}
            assert objects == {f"snapshots/{s}.snap" for s in manifest.history}, r
            assert len(objects) <= 2  # keep=2
    finally:
        outputs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            outputs.append((proc.returncode, out, err))
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    results = [json.loads(line) for _, out, _ in outputs for line in out.splitlines()]
    for r, manifest in enumerate(manifests):
        this = [x for x in results if x["round"] == r]
        winners = [x for x in this if x["snapshot"]]
        assert all(x["error"] is None for x in this), this
        assert manifest.snapshot_id in {x["snapshot"] for x in winners}
        with capsys.disabled():
            print(
                f"\nrace round {r}: {len(this)} devices, {sum(x['manifest_writes'] for x in this)}"
                f" manifest writes, winners {[x['name'] for x in winners]}"
            )
    db = peewee.SqliteDatabase(str(tmp_path / "fresh.db"), pragmas={"foreign_keys": 1})
    fresh = Replicator(
        db, MODELS, EmbeddedRemote(remote_path), racer_blobs, KEY, device_name="fresh"
    )
    report = fresh.login()
    assert report.restored == manifests[-1].snapshot_id
    assert report.downloaded == {}  # the snapshot holds every row the remote has
    db2 = peewee.SqliteDatabase(str(tmp_path / "full.db"), pragmas={"foreign_keys": 1})
    full = Replicator(db2, MODELS, EmbeddedRemote(remote_path), device_name="full")
    full.sync()  # every row, downloaded from the remote
    rows = snapshot_rows(fresh)
    assert rows == snapshot_rows(full)
    assert len(rows["note"]) == DEVICES * ROUNDS * 2
