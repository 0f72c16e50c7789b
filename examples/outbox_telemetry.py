"""An app's telemetry, course progress and assessments go through one event outbox.

A local receiver on 127.0.0.1 stands in for the app's services (it un-gzips
batches and drops repeated message ids, as a real one should). The app saves the
seed's three sample events from its own thread; the outbox's worker delivers the
batched telemetry by itself (autoSync), progress events coalesce per learner with
a merge that never lets progress go backwards, and an offline spell loses nothing.

Run: .venv/bin/python examples/outbox_telemetry.py [DIRECTORY]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from replicator import OfflineError, Outbox
from replicator.outbox import per_key_max
from replicator.testing import SEED_EVENTS, EventReceiver


def configurations(url: str) -> dict:
    """The seed's configurations, pointed at the local receiver; telemetry syncs by
    itself every 0.01 minutes or as soon as 20 events wait."""
    api = {"host": url, "params": "sample_params"}
    return {
        "TELEMETRY": {
            "api": {**api, "method": "post", "path": "v3/telemetry"},
            "autoSync": {"frequency": 0.01, "threshold": 20, "bandwidth": 200},
            "shouldBatch": True,
        },
        "COURSE_PROGRESS": {
            "api": {**api, "method": "patch", "path": "v1/content/state/update"},
            "shouldBatch": False,
        },
        "COURSE_ASSESSMENT": {
            "api": {**api, "method": "patch", "path": "v1/assessment/update"},
            "shouldBatch": False,
        },
    }


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def main(directory: Path) -> None:
    with EventReceiver() as receiver:
        outbox = Outbox(directory / "events.db")
        outbox.init(configurations(receiver.url), merge={"COURSE_PROGRESS": per_key_max})
        outbox.start()

        # the app's thread only saves (a local insert, no network)
        for i in range(50):
            event = json.loads(SEED_EVENTS["TELEMETRY"])
            event["mid"] = f"example-{i}"
            outbox.save("TELEMETRY", event)
        print("saved 50 telemetry events")
        wait_for(lambda: len(receiver.events) >= 50)
        batches = [m for m in receiver.messages if m["type"] == "TELEMETRY"]
        print(f"the worker delivered them in {len(batches)} gzipped batch(es)")

        # progress per learner and course: two saves coalesce, the merge keeps the best
        key = "learner-44c1/do_2127517138056724481636"
        outbox.save("COURSE_PROGRESS", {"do_1": 2, "do_2": 1}, key=key)
        outbox.save("COURSE_PROGRESS", {"do_1": 1, "do_3": 1}, key=key)
        outbox.save("COURSE_ASSESSMENT", SEED_EVENTS["COURSE_ASSESSMENT"], priority=5)
        outbox.sync("COURSE_ASSESSMENT")
        report = outbox.sync("COURSE_PROGRESS")
        sent = [e["data"] for e in receiver.events if e["type"] == "COURSE_PROGRESS"]
        print(f"progress: {report.messages_sent} request(s), sent {sent}")

        # offline: the receiver goes away, the events stay
        url = receiver.url
    outbox.save("COURSE_PROGRESS", {"do_2": 2}, key=key)
    try:
        outbox.sync("COURSE_PROGRESS")
    except OfflineError as exc:
        print(
            f"offline: {type(exc).__name__}; waiting:",
            outbox.status()["COURSE_PROGRESS"].pending_events,
        )
    outbox.close()
    print(f"(the receiver was at {url}; the event waits in {directory.name}/events.db)")

    with EventReceiver() as back:
        again = Outbox(directory / "events.db")
        again.init(configurations(back.url), merge={"COURSE_PROGRESS": per_key_max})
        again.sync("COURSE_PROGRESS")
        print("back online, delivered:", [e["data"] for e in back.events])
        for name, status in again.status().items():
            print(
                f"  {name:<18} pending {status.pending_events}, dead letters {status.dead_letters}"
            )
        again.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
