"""An unreachable remote raises OfflineError; local data is unchanged; the next sync picks up."""

from __future__ import annotations

import shutil

import pytest

from replicator import EmbeddedRemote, OfflineError
from replicator.testing import FaultyRemote
from tests.helpers import snapshot_rows
from tests.models import Comment, Note


def dump(device):
    return list(device.database.connection().iterdump())


def test_unreachable_remote_changes_nothing_locally(make_device, tmp_path):
    # a remote on a share that worked and went away (a missing folder from the start is
    # a setup mistake instead: tests/stores/test_setup_mistakes.py)
    (tmp_path / "gone").mkdir()
    unreachable = EmbeddedRemote(tmp_path / "gone" / "remote.db")
    shutil.rmtree(tmp_path / "gone")
    a = make_device("a", store=unreachable)
    with a.bound():
        Note.create(title="kept")
    before = dump(a)
    with pytest.raises(OfflineError) as info:
        a.sync()
    assert info.value.retryable
    assert "sync again" in str(info.value)
    assert dump(a) == before


def test_offline_mid_download_resumes(make_device, remote):
    a = make_device("a")
    with a.bound():
        for i in range(6):
            n = Note.create(title=f"n{i}")
            Comment.create(note=n, text=f"c{i}")
    a.sync()
    faulty = FaultyRemote(remote)
    b = make_device("b", store=faulty, page_size=2)
    with b.bound():
        Note.create(title="local, not yet uploaded")
    pulls = {"n": 0}

    def cut(*args, **kwargs):
        pulls["n"] += 1
        if pulls["n"] == 5:
            faulty.offline = True

    faulty.hooks["pull"] = cut
    with pytest.raises(OfflineError):
        b.sync()
    # the pages applied before the cut are committed with their cursors
    assert b.local.tracker("note") is not None
    assert b.dirty_counts()["note"] == 1
    faulty.offline = False
    faulty.hooks.clear()
    b.sync()
    a.sync()
    assert snapshot_rows(a) == snapshot_rows(b)
    with b.bound():
        assert Note.select().count() == 7


def test_the_app_can_ask_what_is_pending(make_device):
    import pytest

    from replicator import ConfigurationError

    a = make_device("a")
    with a.bound():
        kept = Note.create(title="kept")
        gone = Note.create(title="gone")
    assert a.pending_count() == 2
    assert a.is_pending(Note, kept.id) and a.is_pending("note", gone.id)
    a.sync()
    assert a.pending_count() == 0 and not a.is_pending(Note, kept.id)
    with a.bound():
        gone.delete_instance()
        Note.update(title="edited").where(Note.id == kept.id).execute()
    assert a.pending_count() == 2
    assert a.is_pending(Note, gone.id)  # a delete waiting for upload
    assert a.is_pending(Note, kept.id)
    assert not a.is_pending(Note, "never-existed")
    a.sync()
    assert not a.is_pending(Note, gone.id) and a.pending_count() == 0
    with pytest.raises(ConfigurationError, match="collections"):
        a.is_pending("settings", kept.id)
