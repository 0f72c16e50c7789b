"""A device with an encrypted database, for the plaintext scan: runs one operation and,
when told, kills itself with SIGKILL at its Nth SQL statement or at the first bytes of
a snapshot going up or coming down.

usage: cipher_worker.py PLACE OPERATION KILL
PLACE holds ``dev/`` (the device's folder, its working directory) and ``server/`` (the
remote, the bucket); KILL is ``never``, ``bytes`` or a statement number. With
``never`` the worker prints how many statements the operation ran.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import peewee
from playhouse.migrate import SqliteMigrator, migrate

from replicator import (
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    Replicator,
    SnapshotKey,
    StoreIngest,
    SyncModel,
)
from replicator.cipher import EncryptedDatabase
from replicator.strategies.snapshot import Never
from tests.campaign_models import Household

DEVICE_KEY = bytes(range(32))
OTHER_KEY = bytes(range(32, 64))
SNAPSHOT_KEY = SnapshotKey(bytes(range(64, 96)))
MARK = "Zeferina-Mucavele-registo-"  # + a number: every row's title holds one


class Note(SyncModel):
    title = peewee.TextField()
    body = peewee.TextField(default="")

    class Meta:
        table_name = "note"


class NoteV2(SyncModel):  # the app after an upgrade that added a column
    title = peewee.TextField()
    body = peewee.TextField(default="")
    village = peewee.TextField(default="")

    class Meta:
        table_name = "note"


_count = 0
_lock = threading.Lock()
_kill_at: int | None = None


def _trace(_sql: str) -> None:
    global _count
    with _lock:
        _count += 1
        if _kill_at is not None and _count >= _kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


class Traced(EncryptedDatabase):
    def _connect(self):  # type: ignore[no-untyped-def]
        conn = super()._connect()
        conn.set_trace_callback(_trace)
        return conn


def _on_bytes(kill: str):  # type: ignore[no-untyped-def]
    def progress(p):  # type: ignore[no-untyped-def]
        if kill == "bytes" and p.phase in ("snapshot", "restore") and p.done > 0:
            os.kill(os.getpid(), signal.SIGKILL)

    return progress


def device(place: Path, name: str, key: bytes, kill: str, **kw):  # type: ignore[no-untyped-def]
    remote = EmbeddedRemote(place / "server" / "remote.db")
    blobs = DirectoryBlobStore(place / "server" / "bucket")
    db = Traced(str(place / "dev" / f"{name}.db"), key=key, pragmas={"foreign_keys": 1})
    models = kw.pop("models", [Note])
    if Household in models:  # a collector: households go up as bundles
        kw["bundles"] = Bundles(blobs, StoreIngest(remote), [Household], max_rows=50)
    return Replicator(
        db,
        models,
        remote,
        blobs,
        SNAPSHOT_KEY,
        device_name=name,
        on_progress=_on_bytes(kill),
        **kw,
    )


def write(rep: Replicator, start: int, n: int) -> None:
    with rep.bound():
        for i in range(start, start + n):
            if Household in rep.models:
                Household.create(head=f"{MARK}h{i}", members=i % 7)
            else:
                Note.create(title=f"{MARK}{i}", body=f"{MARK}{i} " * 20)


def run(place: Path, operation: str, kill: str) -> None:
    if operation == "setup":  # not killed: the state every run starts from
        a = device(place, "a", DEVICE_KEY, "never")
        write(a, 0, 300)
        assert a.sync().snapshot is not None  # uploads, publishes the first snapshot
        write(a, 300, 100)  # unsynced: what the next publish carries
        c = device(place, "c", OTHER_KEY, "never", models=[Household])
        write(c, 0, 300)  # unsynced: what the bundles carry
        return
    global _kill_at
    _kill_at = int(kill) if kill.isdigit() else None
    if operation == "publish":  # a sync that uploads, bundles and publishes
        device(place, "a", DEVICE_KEY, kill).sync()
    elif operation == "restore":  # a new device under another key restores the snapshot
        device(place, "b", OTHER_KEY, kill, snapshot_strategy=Never()).login()
    elif operation == "bundle":  # a collector sends its households as bundles
        device(place, "c", OTHER_KEY, kill, models=[Household]).sync()
    elif operation == "upgrade":  # the app adds a column, then syncs (a full re-download)
        db = Traced(str(place / "dev" / "a.db"), key=DEVICE_KEY, pragmas={"foreign_keys": 1})
        migrate(SqliteMigrator(db).add_column("note", "village", peewee.TextField(default="")))
        db.close()
        device(place, "a", DEVICE_KEY, kill, models=[NoteV2], snapshot_strategy=Never()).sync()
    else:
        raise SystemExit(f"unknown operation {operation}")
    print(_count)


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
