"""Convergence while the app writes during syncs, as a property.

Random histories over 3 devices whose databases run in WAL mode, as apps that
write from several threads do. Besides ordinary local writes and syncs, a sync
may be interrupted: at a random statement of the engine's own connection
(sqlite3's trace callback), the app commits a transaction on its own
connection: a document with its parts, a delete that SQLite cascades or sets
to null, a folder re-parented in the tree. After a few fault-free rounds every
device must hold the same rows, nothing dirty, no orphan locally or remotely,
and the remote exactly the live rows.
``REPLICATOR_APPWRITES_EXAMPLES`` (default 15) sets the number of histories.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

import peewee
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from replicator import EmbeddedRemote, Replicator, SyncModel
from tests.helpers import assert_converged

EXAMPLES = int(os.environ.get("REPLICATOR_APPWRITES_EXAMPLES", "15"))
TEXT = {"default": "", "constraints": [peewee.SQL("DEFAULT ''")]}


class Folder(SyncModel):
    parent = peewee.ForeignKeyField("self", null=True, on_delete="CASCADE")
    name = peewee.TextField(**TEXT)

    class Meta:
        table_name = "folder"


class Doc(SyncModel):
    folder = peewee.ForeignKeyField(Folder, null=True, on_delete="SET NULL")
    title = peewee.TextField(**TEXT)

    class Meta:
        table_name = "doc"


class Part(SyncModel):
    doc = peewee.ForeignKeyField(Doc, on_delete="CASCADE")
    text = peewee.TextField(**TEXT)

    class Meta:
        table_name = "part"


MODELS = [Folder, Doc, Part]
KEYS = {"folder": [("parent_id", "folder")], "doc": [("folder_id", "folder")],
        "part": [("doc_id", "doc")]}  # fmt: skip


def app_write(conn: sqlite3.Connection, kind: int, pick: int) -> None:
    """One app transaction, in raw SQL on the app's own connection."""

    def ids(table: str) -> list[str]:
        return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]

    def choose(table: str) -> str | None:
        found = ids(table)
        return found[pick % len(found)] if found else None

    kind %= 5
    if kind == 0:  # a document and its parts, committed together
        doc = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO doc (id, folder_id, title) VALUES (?, ?, 'app')", (doc, choose("folder"))
        )
        for _ in range(2):
            conn.execute(
                "INSERT INTO part (id, doc_id, text) VALUES (?, ?, 'p')", (str(uuid.uuid4()), doc)
            )
    elif kind == 1:  # a folder, maybe under another
        conn.execute(
            "INSERT INTO folder (id, parent_id, name) VALUES (?, ?, 'f')",
            (str(uuid.uuid4()), choose("folder")),
        )
    elif kind == 2 and (doc := choose("doc")):  # parts cascade
        conn.execute("DELETE FROM doc WHERE id = ?", (doc,))
    elif kind == 3 and (folder := choose("folder")):  # subtree cascades, docs set null
        conn.execute("DELETE FROM folder WHERE id = ?", (folder,))
    elif kind == 4:  # re-parent a folder (never under its own subtree, locally)
        folder, target = choose("folder"), choose("folder")
        if folder and target and folder != target:
            below = conn.execute(
                "WITH RECURSIVE sub(id) AS (SELECT ? UNION SELECT f.id FROM folder f"
                " JOIN sub ON f.parent_id = sub.id) SELECT 1 FROM sub WHERE id = ?",
                (folder, target),
            ).fetchone()
            if not below:
                conn.execute("UPDATE folder SET parent_id = ? WHERE id = ?", (target, folder))


class AppWritesDuringSync(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="replicator-appw-"))
        self.remote = EmbeddedRemote(self.dir / "remote.db")
        self.devices: list[Replicator] = []
        self.apps: list[sqlite3.Connection] = []
        self.injected = 0

    @initialize()
    def open_devices(self) -> None:
        for i in range(3):
            path = self.dir / f"d{i}.db"
            db = peewee.SqliteDatabase(
                str(path), pragmas={"foreign_keys": 1, "journal_mode": "wal", "synchronous": 0}
            )
            self.devices.append(Replicator(db, MODELS, self.remote, device_name=f"d{i}"))
            app = sqlite3.connect(path, timeout=0, isolation_level=None)
            app.execute("PRAGMA foreign_keys = ON")
            self.apps.append(app)

    def _app_transaction(self, d: int, kind: int, pick: int) -> bool:
        app = self.apps[d]
        try:
            app.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False  # the engine holds the write lock right now: the app would wait
        try:
            app_write(app, kind, pick)
            app.execute("COMMIT")
        except BaseException:
            app.execute("ROLLBACK")
            raise
        return True

    @rule(d=st.integers(0, 2), kind=st.integers(0, 4), pick=st.integers(0, 99))
    def write(self, d: int, kind: int, pick: int) -> None:
        assert self._app_transaction(d, kind, pick)

    @rule(
        d=st.integers(0, 2),
        at=st.integers(1, 120),
        kind=st.integers(0, 4),
        pick=st.integers(0, 99),
    )
    def sync_while_the_app_writes(self, d: int, at: int, kind: int, pick: int) -> None:
        conn = self.devices[d].database.connection()
        state = {"n": 0, "done": False}

        def trace(_sql: str) -> None:
            state["n"] += 1
            if not state["done"] and state["n"] >= at:
                state["done"] = self._app_transaction(d, kind, pick)

        conn.set_trace_callback(trace)
        try:
            self.devices[d].sync()
        finally:
            conn.set_trace_callback(None)
        self.injected += state["done"]

    @rule(d=st.integers(0, 2))
    def sync(self, d: int) -> None:
        self.devices[d].sync()

    def teardown(self) -> None:
        try:
            if self.devices:
                self.check()
        finally:
            for app in self.apps:
                app.close()
            for device in self.devices:
                device.database.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def check(self) -> None:
        views = assert_converged(self.devices, MODELS)
        for device in self.devices:
            assert device.local.parked() == {}, "documents left aside"
        db = self.devices[0].database
        for table, keys in KEYS.items():
            live = {i: doc for i, doc in self.remote.all_docs(table).items() if not doc.deleted}
            assert sorted(live) == [r[0] for r in views[0][table]], f"remote {table} differs"
            for column, parent in keys:
                orphans = db.execute_sql(
                    f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" IS NOT NULL'
                    f' AND "{column}" NOT IN (SELECT id FROM "{parent}")'
                ).fetchone()[0]
                assert orphans == 0, f"orphan in {table}.{column}"
                parents = {i for i, d in self.remote.all_docs(parent).items() if not d.deleted}
                for doc in live.values():
                    assert doc.data.get(column) in (None, *parents), f"remote orphan in {table}"


AppWritesDuringSync.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestAppWritesDuringSync = AppWritesDuringSync.TestCase


def test_a_folder_deleted_by_the_app_between_the_engines_pages():
    """Found by the property: a document arriving for a folder the app deleted while
    the sync ran must be kept with its key cleared (SET NULL), not fail its insert."""
    history = AppWritesDuringSync()
    history.open_devices()
    for _ in range(3):
        history.write(d=0, kind=0, pick=0)
    history.write(d=0, kind=1, pick=0)
    history.sync_while_the_app_writes(d=0, at=1, kind=0, pick=0)
    for _ in range(3):
        history.write(d=0, kind=0, pick=0)
    history.sync_while_the_app_writes(d=1, at=11, kind=3, pick=0)
    assert history.injected == 2
    history.teardown()


class FirestoreAppWrites(AppWritesDuringSync):
    """The same histories through FirestoreRemote on the emulator."""

    client: object = None

    def __init__(self) -> None:
        super().__init__()
        import uuid as _uuid

        from replicator.stores.firestore import FirestoreRemote

        self.remote = FirestoreRemote(self.client, root=f"users/{_uuid.uuid4().hex}", timeout=20)  # type: ignore[assignment]


def test_app_writes_during_sync_on_the_firestore_emulator(firestore_client):
    from hypothesis.stateful import run_state_machine_as_test

    FirestoreAppWrites.client = firestore_client
    run_state_machine_as_test(
        FirestoreAppWrites,
        settings=settings(
            max_examples=int(os.environ.get("REPLICATOR_FIRESTORE_APPWRITES_EXAMPLES", "4")),
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
