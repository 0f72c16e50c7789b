"""A device killed (SIGKILL) in the middle of a granted upload leaves nothing half
stored, and two device processes racing one conditional create through grants have
one winner: real processes, real SeaweedFS, the grant service under uvicorn."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap

UPLOADER = textwrap.dedent(
    """
    import io, sys, time
    from replicator.stores.granted import GrantedBlobStore
    from replicator.testing import MockIdTokens
    from replicator.testing.grants import PROJECT

    url, uid, key, mode = sys.argv[1:5]
    store = GrantedBlobStore(url, MockIdTokens(uid, PROJECT))
    if mode == "slow":
        def crawl(n):
            print("sent", n, flush=True)
            time.sleep(0.5)
        store.put(key, io.BytesIO(b"x" * (8 << 20)), on_bytes=crawl)
    else:
        from replicator import PreconditionFailed
        try:
            store.put(key, io.BytesIO(mode.encode()), if_none_match=True)
            print("won", flush=True)
        except PreconditionFailed:
            print("lost", flush=True)
    """
)


def _device(storage, uid: str, key: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", UPLOADER, storage.url, uid, key, mode],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_device_killed_mid_upload_stores_nothing_and_can_start_again(granted_storage):
    uid = "u" + os.urandom(6).hex()
    device = _device(granted_storage, uid, "snapshots/big.snap", "slow")
    assert device.stdout is not None and device.stdout.readline().startswith("sent")
    os.kill(device.pid, signal.SIGKILL)
    device.wait(30)
    store = granted_storage.store(uid)
    assert store.head("snapshots/big.snap") is None  # nothing half stored
    assert store.list("") == []
    store.put("snapshots/big.snap", io.BytesIO(b"whole"), if_none_match=True)
    assert store.head("snapshots/big.snap").size == 5
    store.close()


def test_device_processes_racing_one_create_have_one_winner(granted_storage):
    uid = "u" + os.urandom(6).hex()
    for round_ in range(2):
        key = f"race-{round_}.json"
        devices = [_device(granted_storage, uid, key, f"device-{n}") for n in range(8)]
        answers = [d.communicate(timeout=120)[0].strip() for d in devices]
        assert sorted(answers) == ["lost"] * 7 + ["won"], answers
        out = io.BytesIO()
        granted_storage.store(uid).get(key, out)
        assert out.getvalue().startswith(b"device-")
