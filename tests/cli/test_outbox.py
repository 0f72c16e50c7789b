"""``replicator outbox status|sync|dead-letters|requeue`` on a real outbox file."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
from click.testing import CliRunner

from replicator import Outbox
from replicator.cli import main
from replicator.testing import SEED_CONFIGS, SEED_EVENTS, EventReceiver


def configs(url: str) -> dict:
    raw = json.loads(SEED_CONFIGS)
    for config in raw.values():
        config["api"]["host"] = url
    return raw


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("command", ["status", "sync", "dead-letters", "requeue"])
def test_every_outbox_command_has_help(command):
    result = run("outbox", command, "--help")
    assert result.exit_code == 0 and "EVENTS" in result.output


def test_status_sync_dead_letters_requeue(tmp_path):
    path = tmp_path / "events.db"
    with EventReceiver() as receiver:
        box = Outbox(path)
        box.init(configs(receiver.url))
        for _ in range(3):
            box.save("TELEMETRY", SEED_EVENTS["TELEMETRY"])
        box.save("COURSE_PROGRESS", SEED_EVENTS["COURSE_PROGRESS"])
        box.close()

        result = run("outbox", "status", str(path))
        assert result.exit_code == 0, result.output
        assert re.search(r"TELEMETRY\s+3\s+\d+\s+0\s+0\s+0", result.output), result.output
        assert re.search(r"COURSE_PROGRESS\s+1\s", result.output), result.output

        receiver.fail(422)  # the progress event is refused
        result = run("outbox", "sync", str(path), "--type", "COURSE_PROGRESS")
        assert result.exit_code == 0, result.output
        assert "1 dead-lettered" in result.output
        result = run("outbox", "dead-letters", str(path))
        assert "COURSE_PROGRESS" in result.output and "HTTP 422" in result.output

        result = run("outbox", "sync", str(path))  # every type
        assert result.exit_code == 0, result.output
        assert "TELEMETRY: sent 3 event(s) in 1 message(s)" in result.output
        assert len(receiver.events) == 3

        result = run("outbox", "requeue", str(path))
        assert "1 message(s) back in line" in result.output
        run("outbox", "sync", str(path), "--type", "COURSE_PROGRESS")
        assert len(receiver.events) == 4
        result = run("outbox", "status", str(path))
        assert re.search(r"COURSE_PROGRESS\s+0\s+0\s+0\s+0\s+0\s+\d{4}-", result.output)


def test_offline_is_one_line_and_keeps_the_events(tmp_path):
    path = tmp_path / "events.db"
    with EventReceiver() as gone:
        url = gone.url
    box = Outbox(path)
    box.init(configs(url))
    box.save("COURSE_PROGRESS", {"a": 1})
    box.close()
    result = run("outbox", "sync", str(path), "--type", "COURSE_PROGRESS")
    assert result.exit_code == 1
    assert "OfflineError" in result.output and "Traceback" not in result.output
    assert "1 " in run("outbox", "status", str(path)).output


def test_a_file_that_is_not_an_outbox_is_refused_untouched(tmp_path):
    app = tmp_path / "app.db"
    conn = sqlite3.connect(app)
    conn.execute("CREATE TABLE note (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = app.read_bytes()
    for command in ("status", "sync", "dead-letters", "requeue"):
        result = run("outbox", command, str(app))
        assert result.exit_code == 1, result.output
        assert "file of its own" in result.output and "Traceback" not in result.output
    assert app.read_bytes() == before
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00garbage" * 512)
    result = run("outbox", "status", str(garbage))
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_sync_without_configurations_says_where_they_come_from(tmp_path):
    path = tmp_path / "events.db"
    Outbox(path).close()
    result = run("outbox", "sync", str(path))
    assert result.exit_code == 1 and "outbox.init()" in result.output


def test_dead_letters_names_a_message_whose_sink_failed(tmp_path):
    from replicator.outbox import Retry

    class Broken:
        def deliver(self, delivery):
            raise ValueError("the app's sink has a bug")

        def close(self):
            pass

    path = tmp_path / "events.db"
    box = Outbox(path, retry=Retry(attempts=1))
    box.init(configs("http://127.0.0.1:9"), sinks={"COURSE_PROGRESS": Broken()})
    box.save("COURSE_PROGRESS", {"a": 1})
    assert box.sync("COURSE_PROGRESS").dead_lettered == 1
    box.close()
    result = run("outbox", "dead-letters", str(path))
    assert result.exit_code == 0, result.output
    assert "sink failed" in result.output and "ValueError" in result.output
    assert "HTTP 0" not in result.output
