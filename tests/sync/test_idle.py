"""An idle sync makes exactly one remote read and no write."""

from __future__ import annotations

from replicator.testing import FaultyRemote
from tests.models import Note


def test_idle_sync_costs_one_read(make_device, remote):
    a, b = make_device("a"), make_device("b")
    with a.bound():
        Note.create(title="x")
    a.sync()
    b.sync()
    a.sync()
    faulty = FaultyRemote(remote)
    b.remote = faulty
    before = remote.usage.copy()
    report = b.sync()
    assert report.idle
    assert faulty.calls == ["uploads_after"]
    assert report.usage.reads == 1 and report.usage.writes == 0
    assert remote.usage.minus(before).reads == 1


def test_sync_after_another_device_uploads_is_not_idle(make_device):
    a, b = make_device("a"), make_device("b")
    a.sync()
    b.sync()
    assert b.sync().idle
    with a.bound():
        Note.create(title="new")
    a.sync()
    report = b.sync()
    assert not report.idle
    assert report.downloaded == {"note": 1}
    assert b.sync().idle
