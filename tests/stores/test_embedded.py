"""EmbeddedRemote's connections: one per thread for a whole sync, nothing held between syncs."""

from __future__ import annotations

import os
import sqlite3
import threading

from replicator import EmbeddedRemote
from replicator.stores.base import DeviceRecord, Write

DEVICE = DeviceRecord("dev-1", name="test")


def _put(remote: EmbeddedRemote, doc_id: str, title: str) -> None:
    remote.push([Write("note", doc_id, {"id": doc_id, "title": title})], DEVICE)


def test_a_file_replaced_between_sessions_is_read_afresh(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    with remote.session():
        _put(remote, "a", "first file")
    other = EmbeddedRemote(tmp_path / "other.db")
    _put(other, "b", "second file")
    assert set(remote.all_docs("note")) == {"a"}
    other.close()
    os.replace(tmp_path / "other.db", tmp_path / "remote.db")
    assert set(remote.all_docs("note")) == {"b"}
    _put(remote, "c", "written to the new file")
    assert set(EmbeddedRemote(tmp_path / "remote.db").all_docs("note")) == {"b", "c"}


def test_no_operation_leaves_a_transaction_open(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    _put(remote, "a", "x")
    remote.pull("note", None, 10)
    remote.get("note", ["a", "missing"])
    other = sqlite3.connect(tmp_path / "remote.db", timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # fails at once if the store still held a lock
    other.execute("ROLLBACK")
    other.close()


def test_threads_share_a_store_each_with_its_own_connection(tmp_path):
    remote = EmbeddedRemote(tmp_path / "remote.db")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                _put(remote, f"t{n}-{i}", "x")
                remote.pull("note", None, 500)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(remote.all_docs("note")) == 80


def test_a_sync_opens_one_connection_not_one_per_batch(tmp_path, monkeypatch):
    import peewee

    from replicator import Replicator
    from replicator.stores import embedded
    from tests.models import MODELS, Note

    remote = EmbeddedRemote(tmp_path / "remote.db")
    device = Replicator(peewee.SqliteDatabase(str(tmp_path / "a.db")), MODELS, remote)
    with device.bound(), device.database.atomic():
        for i in range(2_000):  # five batches
            Note.create(title=f"n{i}")
    opened: list[object] = []
    real = embedded.sqlite3.connect

    def counting(*args: object, **kwargs: object) -> sqlite3.Connection:
        opened.append(args[0])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(embedded.sqlite3, "connect", counting)
    report = device.sync()
    assert report.uploaded == {"note": 2_000}
    assert len(opened) == 1, opened
    # and nothing is left open afterwards: the last connection closed removes the WAL
    assert not (tmp_path / "remote.db-wal").exists()
    other = sqlite3.connect(tmp_path / "remote.db", timeout=0, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("ROLLBACK")
    other.close()
