"""A process on a shared outbox file, for the several-processes soak.

usage: python outbox_procs.py app DB URL LOG SECONDS SEED
       python outbox_procs.py sync DB STOPFILE

``app`` is an app with its own worker: it saves events of two types (batched
TELEMETRY, single COURSE_PROGRESS) for SECONDS, with an explicit sync now and
then, appending each event's id to LOG once ``save`` returned, then closes its
outbox and exits 0. ``sync`` does what ``replicator outbox sync FILE`` does,
over and over until STOPFILE exists: open the file with the configurations
stored in it, sync every type, close.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
import uuid

from replicator import Outbox, ReplicatorError
from replicator.outbox import Retry

FAST = Retry(attempts=3, base=0.01, cap=0.2)


def configs(url: str) -> list[dict]:
    return [
        {
            "type": "TELEMETRY",
            "api": {"method": "post", "host": url, "path": "telemetry", "params": ""},
            "autoSync": {"frequency": 0.002, "threshold": 5},
            "shouldBatch": True,
        },
        {
            "type": "COURSE_PROGRESS",
            "api": {"method": "patch", "host": url, "path": "progress", "params": ""},
            "autoSync": {"frequency": 0.002, "threshold": 1},
            "shouldBatch": False,
        },
    ]


def app(db: str, url: str, log_path: str, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    outbox = Outbox(db, retry=FAST, batch_events=8)
    outbox.init(configs(url))
    outbox.start()
    deadline = time.monotonic() + seconds
    with open(log_path, "a") as log:
        i = 0
        while time.monotonic() < deadline:
            kind = "TELEMETRY" if rng.random() < 0.7 else "COURSE_PROGRESS"
            event_id = uuid.uuid4().hex
            outbox.save(kind, {"u": event_id, "i": i, "pid": os.getpid()})
            log.write(event_id + "\n")
            log.flush()
            i += 1
            time.sleep(rng.random() * 0.002)  # an app, not a tight loop
            if rng.random() < 0.002:
                with contextlib.suppress(ReplicatorError):
                    outbox.sync(kind)
    outbox.close(timeout=5)


def sync(db: str, stop: str) -> None:
    while not os.path.exists(stop):
        with contextlib.suppress(ReplicatorError):
            box = Outbox(db, retry=FAST)
            try:
                for name in sorted(box.configurations):
                    box.sync(name)
            finally:
                box.close()


if __name__ == "__main__":
    if sys.argv[1] == "app":
        app(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]))
    else:
        sync(sys.argv[2], sys.argv[3])
