"""A local database that cannot be used is told as such, from the first call that touches
it: a file that is not SQLite, a folder, a path in a missing folder, a file damaged
while the app runs. Each is a ``LocalDatabaseError`` (never peewee's own exception),
not retryable, whose message names the problem and whose hint says what to do; the
file is left as it was."""

from __future__ import annotations

import os

import peewee
import pytest

from replicator import (
    DirectoryBlobStore,
    EmbeddedRemote,
    LocalDatabaseError,
    Replicator,
    SnapshotKey,
)
from tests.models import MODELS, Note

KEY = SnapshotKey(bytes(range(32)))


def _refused(exc: BaseException, *words: str) -> None:
    assert isinstance(exc, LocalDatabaseError), repr(exc)
    assert not exc.retryable and exc.hint, repr(exc)
    for word in words:
        assert word in str(exc), str(exc)


def _device(path, tmp_path, **kw) -> Replicator:
    db = peewee.SqliteDatabase(str(path), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, EmbeddedRemote(tmp_path / "remote.db"), **kw)


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    junk = tmp_path / "phone.db"
    junk.write_bytes(b"field notes, not a database " * 200)
    before = junk.read_bytes()
    with pytest.raises(LocalDatabaseError) as info:
        _device(junk, tmp_path)
    _refused(info.value, str(junk), "not a database")
    assert "not a SQLite database" in info.value.hint
    assert junk.read_bytes() == before


def test_a_folder_given_as_the_database_is_refused(tmp_path):
    (tmp_path / "phone").mkdir()
    with pytest.raises(LocalDatabaseError) as info:
        _device(tmp_path / "phone", tmp_path)
    _refused(info.value, "is a folder")
    assert list((tmp_path / "phone").iterdir()) == []


def test_a_database_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(LocalDatabaseError) as info:
        _device(tmp_path / "data" / "phone.db", tmp_path)
    _refused(info.value, str(tmp_path / "data"), "does not exist")
    assert not (tmp_path / "data").exists()


def _damage(path) -> None:
    """Overwrite the file's header in place, as a disk fault or a stray write would."""
    with open(path, "r+b") as fh:
        fh.write(os.urandom(100))


@pytest.fixture
def damaged(tmp_path) -> Replicator:
    """A device whose database file was damaged after it was opened."""
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    writer = _device(tmp_path / "writer.db", tmp_path, blobs=blobs, key=KEY)
    with writer.bound():
        Note.create(title="published")
    writer.sync()  # publishes the snapshot the restore below would fetch
    device = _device(tmp_path / "phone.db", tmp_path, blobs=blobs, key=KEY)
    _damage(tmp_path / "phone.db")
    return device


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.restore(),
        lambda d: d.login(),
        lambda d: d.is_empty(),
        lambda d: d.dirty_counts(),
        lambda d: d.pending_count(),
        lambda d: d.is_pending(Note, "some-id"),
        lambda d: d.sync(),
    ],
    ids=["restore", "login", "is_empty", "dirty_counts", "pending_count", "is_pending", "sync"],
)
def test_a_database_damaged_after_opening_is_refused_by_every_call(damaged, call):
    with pytest.raises(LocalDatabaseError) as info:
        call(damaged)
    _refused(info.value)
    assert "damaged or not a SQLite database" in info.value.hint
