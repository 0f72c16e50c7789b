"""Convergence, as a property: random multi-device histories with faults all end identical.

A hypothesis state machine drives 3 to 5 devices over one remote. Each step is
a local write on one device (create, edit, delete of parents and children,
progress-map updates) or a sync of one device, possibly with an injected fault
(lost acknowledgement, offline during download, failure before upload). After
the history, a few rounds of fault-free syncs must leave every device and the
remote with the same rows, no dirty rows, no orphans, no duplicates, and,
under FieldMerge, every edit a device made to a field only it edits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import peewee
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from replicator import EmbeddedRemote, FieldMerge, OfflineError, Replicator, SyncModel
from replicator.strategies import map_max
from replicator.testing import FaultyRemote
from tests.helpers import assert_converged

FIELDS = ["f0", "f1", "f2", "f3", "f4"]
EXAMPLES = int(os.environ.get("REPLICATOR_CONVERGENCE_EXAMPLES", "30"))


class Doc(SyncModel):
    title = peewee.TextField(default="")
    f0 = peewee.TextField(default="")
    f1 = peewee.TextField(default="")
    f2 = peewee.TextField(default="")
    f3 = peewee.TextField(default="")
    f4 = peewee.TextField(default="")
    progress = peewee.TextField(default="{}")

    class Meta:
        table_name = "doc"


class Part(SyncModel):
    doc = peewee.ForeignKeyField(Doc, on_delete="CASCADE")
    text = peewee.TextField(default="")

    class Meta:
        table_name = "part"


MODELS = [Doc, Part]
STRATEGY = FieldMerge(fields={"progress": map_max})


class Convergence(RuleBasedStateMachine):
    #: makes the shared remote of one history (the Firestore run swaps it)
    remote_factory = staticmethod(lambda directory: EmbeddedRemote(directory / "remote.db"))

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="replicator-conv-"))
        self.remote = self.remote_factory(self.dir)
        self.devices: list[Replicator] = []
        self.faulty: list[FaultyRemote] = []
        self.owned: dict[tuple[str, int], str] = {}  # (doc id, device) -> last value of f<device>
        self.progress: dict[tuple[str, str], int] = {}  # (doc id, content) -> highest status
        self.deleted: set[str] = set()
        self.counter = 0

    @initialize(n=st.integers(3, 5))
    def open_devices(self, n: int) -> None:
        for i in range(n):
            db = peewee.SqliteDatabase(
                str(self.dir / f"d{i}.db"), pragmas={"foreign_keys": 1, "synchronous": 0}
            )
            faulty = FaultyRemote(self.remote)
            self.faulty.append(faulty)
            self.devices.append(
                Replicator(db, MODELS, faulty, device_name=f"d{i}", conflict_strategy=STRATEGY)
            )
        # a shared starting point, so that random edits often meet on the same rows
        with self.devices[0].bound():
            for _ in range(2):
                Part.create(id=self.token(), doc=Doc.create(id=self.token()), text=self.token())
        for device in self.devices:
            device.sync()

    def token(self) -> str:
        self.counter += 1
        return f"v{self.counter:05d}"

    def ids(self, i: int, table: str) -> list[str]:
        cursor = self.devices[i].database.execute_sql(f"SELECT id FROM {table} ORDER BY id")
        return [r[0] for r in cursor]

    def local_docs(self, i: int) -> list[str]:
        return self.ids(i, "doc")

    def local_parts(self, i: int) -> list[str]:
        return self.ids(i, "part")

    # -- local writes --------------------------------------------------------------

    @rule(d=st.integers(0, 4))
    def create_doc(self, d: int) -> None:
        d %= len(self.devices)
        with self.devices[d].bound():
            Doc.create(id=self.token(), title=self.token())

    @rule(d=st.integers(0, 4), pick=st.integers(0, 99))
    def create_part(self, d: int, pick: int) -> None:
        d %= len(self.devices)
        docs = self.local_docs(d)
        if docs:
            with self.devices[d].bound():
                Part.create(id=self.token(), doc=docs[pick % len(docs)], text=self.token())

    @rule(d=st.integers(0, 4), pick=st.integers(0, 99))
    def edit_own_field(self, d: int, pick: int) -> None:
        d %= len(self.devices)
        docs = self.local_docs(d)
        if docs:
            doc_id = docs[pick % len(docs)]
            value = self.token()
            with self.devices[d].bound():
                Doc.update(**{FIELDS[d]: value}).where(Doc.id == doc_id).execute()
            self.owned[(doc_id, d)] = value

    @rule(d=st.integers(0, 4), pick=st.integers(0, 99))
    def edit_title(self, d: int, pick: int) -> None:
        d %= len(self.devices)
        docs = self.local_docs(d)
        if docs:
            with self.devices[d].bound():
                Doc.update(title=self.token()).where(Doc.id == docs[pick % len(docs)]).execute()

    @rule(
        d=st.integers(0, 4),
        pick=st.integers(0, 99),
        content=st.sampled_from(["c1", "c2", "c3"]),
        status=st.integers(0, 2),
    )
    def record_progress(self, d: int, pick: int, content: str, status: int) -> None:
        d %= len(self.devices)
        docs = self.local_docs(d)
        if docs:
            doc_id = docs[pick % len(docs)]
            with self.devices[d].bound():
                doc = Doc.get_by_id(doc_id)
                progress = json.loads(doc.progress)
                progress[content] = max(progress.get(content, 0), status)
                Doc.update(progress=json.dumps(progress, sort_keys=True)).where(
                    Doc.id == doc_id
                ).execute()
            key = (doc_id, content)
            self.progress[key] = max(self.progress.get(key, 0), status)

    @rule(d=st.integers(0, 4), pick=st.integers(0, 99))
    def edit_part(self, d: int, pick: int) -> None:
        d %= len(self.devices)
        parts = self.local_parts(d)
        if parts:
            with self.devices[d].bound():
                Part.update(text=self.token()).where(Part.id == parts[pick % len(parts)]).execute()

    @rule(d=st.integers(0, 4), pick=st.integers(0, 99))
    def delete_doc(self, d: int, pick: int) -> None:
        d %= len(self.devices)
        docs = self.local_docs(d)
        if docs:
            doc_id = docs[pick % len(docs)]
            with self.devices[d].bound():
                Doc.get_by_id(doc_id).delete_instance(recursive=True)
            self.deleted.add(doc_id)

    @rule(d=st.integers(0, 4), pick=st.integers(0, 99))
    def delete_part(self, d: int, pick: int) -> None:
        d %= len(self.devices)
        parts = self.local_parts(d)
        if parts:
            with self.devices[d].bound():
                Part.delete().where(Part.id == parts[pick % len(parts)]).execute()

    # -- syncs, with faults ------------------------------------------------------------

    @rule(
        d=st.integers(0, 4),
        fault=st.sampled_from(["none", "none", "lost-ack", "offline-pull", "fail-push"]),
    )
    def sync(self, d: int, fault: str) -> None:
        d %= len(self.devices)
        faulty = self.faulty[d]
        if fault == "lost-ack":
            faulty.fail("push", after=True)
        elif fault == "fail-push":
            faulty.fail("push")
        elif fault == "offline-pull":
            faulty.fail("pull")
        try:
            self.devices[d].sync()
        except OfflineError:
            assert fault != "none"
        faulty._faults.clear()

    @precondition(lambda self: len(self.devices) > 0)
    @rule()
    def everyone_syncs(self) -> None:
        for device in self.devices:
            device.sync()

    # -- the property --------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.devices:
                self.check_convergence()
        finally:
            for device in self.devices:
                device.database.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def check_convergence(self) -> None:
        for faulty in self.faulty:
            faulty._faults.clear()
        views = assert_converged(self.devices, MODELS)
        first = self.devices[0]
        # the remote holds exactly the live rows, once each
        for model in MODELS:
            table = model._meta.table_name
            live = {i: d for i, d in self.remote.all_docs(table).items() if not d.deleted}
            local_ids = [r[0] for r in views[0][table]]
            assert sorted(live) == local_ids
        # no orphans, no deleted row alive
        orphans = first.database.execute_sql(
            "SELECT COUNT(*) FROM part WHERE doc_id NOT IN (SELECT id FROM doc)"
        ).fetchone()[0]
        assert orphans == 0
        alive = set(self.local_docs(0))
        assert not (alive & self.deleted), "a deleted row came back"
        # FieldMerge: no device's edit of its own field was lost; progress never went back
        with first.bound():
            for (doc_id, d), value in self.owned.items():
                if doc_id in alive:
                    assert getattr(Doc.get_by_id(doc_id), FIELDS[d]) == value
            for (doc_id, content), status in self.progress.items():
                if doc_id in alive:
                    assert json.loads(Doc.get_by_id(doc_id).progress).get(content) == status


Convergence.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestConvergence = Convergence.TestCase


class FirestoreConvergence(Convergence):
    pass


def test_convergence_on_the_firestore_emulator(firestore_client):
    """A smaller run of the same property through FirestoreRemote."""
    import uuid

    from replicator.stores.firestore import FirestoreRemote

    FirestoreConvergence.remote_factory = staticmethod(
        lambda directory: FirestoreRemote(
            firestore_client, root=f"users/{uuid.uuid4().hex}", timeout=20
        )
    )
    run_state_machine_as_test(
        FirestoreConvergence,
        settings=settings(
            max_examples=int(os.environ.get("REPLICATOR_FIRESTORE_CONVERGENCE_EXAMPLES", "6")),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


class UserConvergence(Convergence):
    pass


def test_convergence_as_a_signed_in_user_under_the_generated_rules(as_users):
    """The same property through Firestore as a signed-in user, the rules generated for
    these models loaded, every call through the TokenGate (no admin slips through)."""
    import uuid

    users = as_users(MODELS)
    UserConvergence.remote_factory = staticmethod(
        lambda directory: users.remote(f"u{uuid.uuid4().hex[:12]}", timeout=20)
    )
    run_state_machine_as_test(
        UserConvergence,
        settings=settings(
            max_examples=int(os.environ.get("REPLICATOR_FIRESTORE_CONVERGENCE_EXAMPLES", "6")),
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    assert users.gate.refused == {} and users.gate.forwarded > 0
