"""The library logs through ``logging`` (logger ``replicator``): one INFO line a sync,
DEBUG per page and batch, WARNING for what is retried or given up; never a key, a
passphrase or a row's content, and it prints nothing."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from replicator import OfflineError, Passphrase
from replicator.testing import FaultyRemote
from tests.models import Comment, Note

SECRET_TITLE = "the-secret-title-3141"
PASSPHRASE = "correct horse battery staple 2718"


def _text(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in records)


def test_a_sync_logs_one_info_line_and_debug_per_page_and_batch(make_device, blobs, caplog):
    a = make_device("a", blobs=blobs, key=Passphrase(PASSPHRASE))
    b = make_device("b")
    with a.bound():
        for i in range(3):
            Comment.create(note=Note.create(title=f"{SECRET_TITLE}-{i}"), text="private")
    with caplog.at_level(logging.DEBUG, logger="replicator"):
        report = a.sync()
        b.sync()
    # (the "granted" store's grant service runs in this process: its lines are the service's)
    ours = [
        r
        for r in caplog.records
        if r.name.startswith("replicator") and not r.name.startswith("replicator.grants")
    ]
    info = [r for r in ours if r.levelno == logging.INFO]
    assert [r.name for r in info] == ["replicator.engine", "replicator.engine"], _text(info)
    assert "sync of a:" in info[0].getMessage()
    assert "uploaded 3 comments and 3 notes" in info[0].getMessage(), info[0].getMessage()
    assert report.snapshot is not None and report.snapshot in info[0].getMessage()
    debug = _text([r for r in ours if r.levelno == logging.DEBUG])
    assert "upload: batch of 6 write(s)" in debug
    assert "download note: page of 3 document(s)" in debug
    everything = _text(caplog.records)
    assert SECRET_TITLE not in everything and "private" not in everything
    assert PASSPHRASE not in everything


def test_a_failed_sync_logs_a_warning_without_the_message(make_device, remote, caplog):
    faulty = FaultyRemote(remote)
    a = make_device("a", store=faulty)
    with a.bound():
        Note.create(title=SECRET_TITLE)
    faulty.fail("push")
    with caplog.at_level(logging.DEBUG, logger="replicator"), pytest.raises(OfflineError):
        a.sync()
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("replicator")
    ]
    assert [r.getMessage() for r in warnings] == ["sync failed: OfflineError (retryable: True)"]
    assert SECRET_TITLE not in _text(caplog.records)


def test_firestore_retries_are_warnings(firestore_client, caplog):
    from google.api_core import exceptions as gexc

    from replicator.stores.firestore import FirestoreRemote

    remote = FirestoreRemote(firestore_client, root="users/logging", attempts=3)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise gexc.ServiceUnavailable("the emulator hiccuped")
        return "answer"

    with caplog.at_level(logging.WARNING, logger="replicator"):
        assert remote._call("a read of note", flaky) == "answer"
    [warning] = [r for r in caplog.records if r.name.startswith("replicator")]
    assert warning.name == "replicator.stores.firestore"
    assert "a read of note (ServiceUnavailable), attempt 1 of 3" in warning.getMessage()


def test_the_library_prints_nothing():
    # the command line (click.echo) and the demo's account (told through its echo
    # argument) speak to the user; nothing else may write to stdout
    root = Path(__file__).parent.parent / "replicator"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name in ("cli.py",):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_until_the_app_configures_logging_nothing_is_said(make_device, capsys):
    a = make_device("a")
    with a.bound():
        Note.create(title="quiet")
    a.sync()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
