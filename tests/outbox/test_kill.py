"""kill -9 at any moment of an outbox's life loses no saved event, and every event
reaches the receiver under one msg_id only (the receiver drops repeated msg_ids).

Each round starts an app process that saves events while its worker delivers,
and either SIGKILLs it at a random moment or lets it die at a random statement
of the outbox's transactions, just before a request, or just after the receiver
answered. A last process drains what is left. REPLICATOR_OUTBOX_KILL_ROUNDS sets
the number of rounds (default 8).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict

from replicator.testing import EventReceiver
from tests.helpers import WORKERS

ROUNDS = int(os.environ.get("REPLICATOR_OUTBOX_KILL_ROUNDS", "8"))
WORKER = WORKERS / "outbox_worker.py"


def test_kill_9_loses_nothing_and_sends_nothing_twice(tmp_path):
    db, log = tmp_path / "events.db", tmp_path / "saved.log"
    rng = random.Random(int(os.environ.get("REPLICATOR_OUTBOX_KILL_SEED", "0")) or None)
    with EventReceiver() as receiver:
        self_died = killed = 0
        for round_ in range(ROUNDS):
            seed = rng.randrange(1, 10**6) if round_ % 2 else 0
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), str(db), receiver.url, str(log), str(seed)],
                stderr=subprocess.PIPE,
            )
            try:
                proc.wait(timeout=rng.uniform(0.3, 1.5))
                self_died += 1
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
            assert proc.returncode in (9, -signal.SIGKILL), proc.stderr.read().decode()[-2000:]
        drain = subprocess.run(
            [sys.executable, str(WORKER), str(db), receiver.url, str(log), "0", "drain"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert drain.returncode == 0, drain.stderr[-2000:]
        time.sleep(0.2)
        saved = log.read_text().split()
        messages_of: dict[str, set[str]] = defaultdict(set)
        for event in receiver.events:
            messages_of[event["data"]["u"]].add(event["msg_id"])
    lost = set(saved) - set(messages_of)
    twice = [u for u, ids in messages_of.items() if len(ids) > 1]
    print(
        f"outbox kill test: {ROUNDS} rounds ({killed} SIGKILL, {self_died} died at a"
        f" statement or a request), {len(saved)} events saved, {len(messages_of)} received,"
        f" {len(lost)} lost, {len(twice)} under two msg_ids,"
        f" {receiver.duplicates} repeated msg_ids dropped by the receiver"
    )
    assert saved, "the app saved nothing: the test tested nothing"
    assert not lost
    assert not twice
