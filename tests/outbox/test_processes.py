"""Several processes on one outbox file lose nothing and send each event under one
``msg_id``.

REPLICATOR_OUTBOX_PROCS app processes (default 2), each saving events while its
own worker delivers, share one file with a process that syncs every type over
and over, as ``replicator outbox sync FILE`` run beside a running app does. They
run for REPLICATOR_OUTBOX_PROCS_SECONDS (default 4). A last sync delivers what is
left; the receiver (which drops a ``msg_id`` it has taken) must then hold every
event whose ``save`` returned, each under one ``msg_id``, and the file nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from replicator import Outbox
from replicator.testing import EventReceiver
from tests.helpers import WORKERS

PROCS = int(os.environ.get("REPLICATOR_OUTBOX_PROCS", "2"))
SECONDS = float(os.environ.get("REPLICATOR_OUTBOX_PROCS_SECONDS", "4"))
WORKER = WORKERS / "outbox_procs.py"


def app(db: Path, url: str, log: Path, seed: int) -> subprocess.Popen:
    """An app process saving for SECONDS while its worker delivers."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), "app", str(db), url, str(log), str(SECONDS), str(seed)],
        stderr=subprocess.PIPE,
    )


def test_several_processes_on_one_file_lose_nothing_and_send_once(tmp_path):
    db, stop = tmp_path / "events.db", tmp_path / "stop"
    logs = [tmp_path / f"saved-{n}.log" for n in range(PROCS)]
    with EventReceiver(latency=0.005) as receiver:
        apps = [app(db, receiver.url, log, seed=n + 1) for n, log in enumerate(logs)]
        time.sleep(0.5)  # the apps created the file and stored their configurations
        syncer = subprocess.Popen(
            [sys.executable, str(WORKER), "sync", str(db), str(stop)], stderr=subprocess.PIPE
        )
        for proc in apps:
            _, err = proc.communicate(timeout=SECONDS + 120)
            assert proc.returncode == 0, err.decode()[-2000:]
        stop.touch()
        _, err = syncer.communicate(timeout=120)
        assert syncer.returncode == 0, err.decode()[-2000:]
        box = Outbox(db)
        for name in sorted(box.configurations):
            box.sync(name)
        status = box.status()
        box.close()
        time.sleep(0.2)
        msg_ids: dict[str, set[str]] = defaultdict(set)
        for event in receiver.events:
            msg_ids[event["data"]["u"]].add(event["msg_id"])
        repeats = receiver.duplicates
    saved = [u for log in logs for u in log.read_text().split()]
    lost = set(saved) - set(msg_ids)
    twice = [u for u, ids in msg_ids.items() if len(ids) > 1]
    left = {t: (s.pending_events, s.dead_letters, s.dropped) for t, s in status.items()}
    print(
        f"outbox processes: {PROCS} apps and a syncing process for {SECONDS:g} s:"
        f" {len(saved)} events saved, {len(msg_ids)} received, {len(lost)} lost,"
        f" {len(twice)} under two msg_ids, {repeats} repeated msg_ids dropped by the receiver"
    )
    assert len(saved) > 200, "the apps saved too little: the test tested nothing"
    assert not lost
    assert not twice
    assert all(v == (0, 0, 0) for v in left.values()), left
