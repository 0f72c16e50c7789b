"""An app saving outbox events in its own process, for the kill -9 tests.

usage: python outbox_worker.py DB URL LOG SEED [drain]

Saves events of two types (batched TELEMETRY, single COURSE_PROGRESS) as fast as
it can with the background worker running and an explicit sync now and then,
appending each event's id to LOG once ``save`` returned. With SEED > 0 it also
dies (``os._exit``) at random statements of the outbox's own transactions and
right before or after a delivery, the moments a kill -9 is most likely to hurt.
``drain`` delivers everything left and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import uuid

from replicator import Outbox, ReplicatorError
from replicator.outbox import Retry
from replicator.stores.http import HttpSink


def configs(url: str) -> list[dict]:
    return [
        {
            "type": "TELEMETRY",
            "api": {"method": "post", "host": url, "path": "telemetry", "params": ""},
            "autoSync": {"frequency": 0.002, "threshold": 15, "bandwidth": None},
            "shouldBatch": True,
        },
        {
            "type": "COURSE_PROGRESS",
            "api": {"method": "patch", "host": url, "path": "progress", "params": ""},
            "autoSync": {"frequency": 0.002, "threshold": 3},
            "shouldBatch": False,
        },
    ]


class Dying:
    """A sink that sometimes dies just before sending or just after the answer."""

    def __init__(self, inner: HttpSink, rng: random.Random) -> None:
        self.inner = inner
        self.rng = rng

    def deliver(self, delivery) -> None:
        if self.rng.random() < 0.03:
            os._exit(9)
        self.inner.deliver(delivery)
        if self.rng.random() < 0.05:
            os._exit(9)  # the receiver has it; the message is still in line

    def close(self) -> None:
        self.inner.close()


def main() -> None:
    db, url, log_path, seed = sys.argv[1:5]
    drain = len(sys.argv) > 5 and sys.argv[5] == "drain"
    outbox = Outbox(db, retry=Retry(attempts=3, base=0.01, cap=0.2), batch_events=10)
    rng = random.Random(int(seed))
    if drain or int(seed) == 0:
        outbox.init(configs(url))
    else:
        sinks = {
            c["type"]: Dying(HttpSink(c["api"]["method"], f"{url}/{c['api']['path']}"), rng)
            for c in configs(url)
        }
        outbox.init(configs(url), sinks=sinks)

        def die_sometimes(statement: str) -> None:
            if statement.startswith("INSERT INTO events"):
                odds = 0.002  # a save: there are many
            elif statement.startswith(("INSERT", "DELETE", "UPDATE", "COMMIT")):
                odds = 0.04  # a step of compiling, acknowledging, dead-lettering
            else:
                return
            if rng.random() < odds:
                os._exit(9)

        outbox._file.conn().set_trace_callback(die_sometimes)  # the app thread's saves
        real_conn = outbox._file.conn

        def traced():
            conn = real_conn()
            conn.set_trace_callback(die_sometimes)
            return conn

        outbox._file.conn = traced  # and the worker's transactions
    if drain:
        for type_ in ("TELEMETRY", "COURSE_PROGRESS"):
            outbox.sync(type_)
        outbox.close()
        return
    outbox.start()
    with open(log_path, "a") as log:
        for i in range(100_000):
            kind = "TELEMETRY" if rng.random() < 0.8 else "COURSE_PROGRESS"
            event_id = uuid.uuid4().hex
            outbox.save(kind, {"u": event_id, "i": i}, priority=rng.randrange(3))
            log.write(event_id + "\n")
            log.flush()
            if rng.random() < 0.02:
                with contextlib.suppress(ReplicatorError):
                    outbox.sync(kind)


if __name__ == "__main__":
    main()
