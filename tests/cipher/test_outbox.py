"""An encrypted outbox file: events saved and delivered as from a plain one, no
plaintext in the file (nor its WAL) while they wait or after, a wrong key refused."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("sqlcipher3", reason="the sqlcipher extra is not installed")

from replicator import Outbox
from replicator.errors import WrongDatabaseKeyError
from replicator.outbox import Retry
from replicator.testing import SEED_CONFIGS, EventReceiver
from tests.cipher.scan import markers_found

KEY = bytes(range(32))
MARK = "learner-Amelia-Cossa-score"


def configs(url):
    raw = json.loads(SEED_CONFIGS)
    for config in raw.values():
        config["api"]["host"] = url
        config["autoSync"] = None
    return raw


def test_an_encrypted_outbox_keeps_and_delivers_events(tmp_path):
    path = tmp_path / "events.db"
    with EventReceiver() as receiver:
        box = Outbox(path, key=KEY, retry=Retry(attempts=2, base=0.01, cap=0.1), timeout=5)
        box.init(configs(receiver.url))
        for i in range(50):
            box.save("COURSE_ASSESSMENT", {"learner": f"{MARK}-{i}", "score": i})
        box.save("TELEMETRY", {"eid": "START", "mid": f"{MARK}-t", "edata": {"who": MARK}})
        # waiting: in the file (and its WAL), encrypted
        assert markers_found(tmp_path, [MARK]) == []
        box.close()
        with pytest.raises(WrongDatabaseKeyError, match=str(path)):
            Outbox(path, key=bytes(32))
        again = Outbox(path, key=lambda: KEY, timeout=5)  # the key from a callback
        again.init(configs(receiver.url))
        report = again.sync("COURSE_ASSESSMENT")
        again.sync("TELEMETRY")
        again.close()
    assert report.events_sent == 50
    assert MARK in json.dumps(receiver.events)  # the markers were there to find
    assert markers_found(tmp_path, [MARK]) == []
