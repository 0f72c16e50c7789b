"""The multi-scope device (``ScopedReplicator``) as signed-in users under the rules
``replicator rules --scopes`` compiles, on the Firestore emulator behind the TokenGate:
the field campaign of seed 001 (three collectors and a supervisor, a collector in a
second campaign, a collector removed with writes not uploaded, a collector added and
restored from the campaign's snapshot) and the learning group of seeds 003/004
(learners read only their own progress; teachers read the group's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import Replicator
from replicator.scopes.device import ScopeChange, ScopedReplicator
from replicator.scopes.members import member_document
from replicator.scopes.plan import database_path
from replicator.snapshots.crypto import Passphrase
from replicator.stores.directory import DirectoryBlobStore
from replicator.stores.firestore import FirestoreRemote
from tests.scope_models import MODELS, SCOPES, Form, Progress, Registration

C1, C2, G = "campaign-1", "campaign-2", "group-1"


class World:
    """A project under the scopes' rules: a server (admin) that makes scopes and
    members and writes reference data, and a device per (user, name)."""

    def __init__(self, users: Any, tmp: Path) -> None:
        self.users, self.tmp = users, tmp
        self.admin = users.service_client()
        self.changes: dict[str, list[ScopeChange]] = {}

    def scope(self, scope: str, kind: str, members: dict[str, str]) -> None:
        self.admin.document(f"scopes/{scope}").set({"kind": kind})
        for uid, role in members.items():
            self.add(scope, kind, uid, role)

    def add(self, scope: str, kind: str, uid: str, role: str) -> None:
        self.admin.document(f"scopes/{scope}/members/{uid}").set(member_document(uid, kind, role))

    def forms(self, scope: str, *names: str) -> None:
        db = peewee.SqliteDatabase(str(self.tmp / f"server-{scope}.db"))
        server = Replicator(db, [Form], FirestoreRemote(self.admin, f"scopes/{scope}"))
        with server.bound():
            for name in names:
                Form.create(name=name)
        server.sync()

    def device(self, uid: str, name: str = "phone", **kw: Any) -> ScopedReplicator:
        changes = self.changes.setdefault(f"{uid}-{name}", [])
        return ScopedReplicator(
            self.tmp / f"{uid}-{name}",
            MODELS,
            SCOPES,
            uid=uid,
            directory=self.users.remote(uid),
            remote_for=lambda root, owned: self.users.remote(uid, root=root, owned=owned),
            blobs_for=lambda m: DirectoryBlobStore(self.tmp / "blobs" / m.scope),
            key_for=lambda m: Passphrase(f"the key of {m.scope}"),
            on_scope=changes.append,
            device_name=f"{uid}-{name}",
            **kw,
        )


def rows(device: ScopedReplicator, scope: str, model: Any, column: str) -> list[Any]:
    with device.scope(scope).bound():
        return sorted(getattr(r, column) for r in model.select())


@pytest.fixture
def world(as_scope_users, tmp_path):
    return World(as_scope_users(MODELS, SCOPES), tmp_path)


def test_the_field_campaign_as_its_members(world, tmp_path):
    crew = {"col-a": "collector", "col-b": "collector", "col-c": "collector"}
    world.scope(C1, "campaign", {**crew, "sup": "supervisor", "adm": "admin"})
    world.scope(C2, "campaign", {"col-a": "collector"})
    world.forms(C1, "household")
    world.forms(C2, "clinic")
    phones = {u: world.device(u) for u in ("col-a", "col-b", "col-c", "sup")}

    first = phones["col-a"].sync()
    assert not first.failed, first.failed
    assert sorted(c.scope for c in first.added) == [C1, C2]
    assert [m.scope for m in phones["col-a"].memberships()] == [C1, C2]
    for uid in ("col-a", "col-b", "col-c"):
        phone = phones[uid]
        phone.sync()
        with phone.scope(C1).bound():
            for n in range(2):
                Registration.create(head=f"{uid} {n}", collector=uid)
    with phones["col-a"].scope(C2).bound():
        Registration.create(head="col-a in the second campaign", collector="col-a")
    for uid in ("col-a", "col-b", "col-c"):
        report = phones[uid].sync()
        assert not report.failed, report.failed
        assert report.reports[C1].uploaded == {"registrations": 2}

    sup = phones["sup"].sync()
    assert not sup.failed and [c.scope for c in sup.added] == [C1]
    assert rows(phones["sup"], C1, Registration, "head") == sorted(
        f"{u} {n}" for u in ("col-a", "col-b", "col-c") for n in range(2)
    )
    assert rows(phones["sup"], C1, Form, "name") == ["household"]
    assert rows(phones["col-a"], C2, Form, "name") == ["clinic"]
    assert not database_path(tmp_path / "sup-phone", C2).exists()  # not hers

    outsider = world.device("out")
    alone = outsider.sync()
    assert alone.reports == {} and alone.failed == {} and outsider.memberships() == []

    # col-c removed by the campaign's admin (signed in, under the rules) with a
    # registration she has not uploaded: her next sync sets it aside and purges
    with phones["col-c"].scope(C1).bound():
        Registration.create(head="written after the removal", collector="col-c")
    world.users.client("adm").document(f"scopes/{C1}/members/col-c").delete()
    lost = phones["col-c"].sync()
    assert not lost.failed, lost.failed
    (removed,) = lost.removed
    assert (removed.scope, removed.pending) == (C1, 1)
    kept = [json.loads(line) for line in removed.set_aside.read_text().splitlines()]
    assert [(k["collection"], k["row"]["head"]) for k in kept] == [
        ("registrations", "written after the removal")
    ]
    assert "lost" in kept[0]["reason"]
    assert not database_path(tmp_path / "col-c-phone", C1).exists()
    assert phones["col-c"].memberships() == []
    assert world.changes["col-c-phone"][-1] == removed

    # a collector added later starts from the campaign's snapshot, then catches up
    for phone in phones.values():
        phone.sync()
    assert (tmp_path / "blobs" / C1).exists(), "no snapshot of the campaign was published"
    world.add(C1, "campaign", "col-d", "collector")
    newcomer = world.device("col-d")
    joined = newcomer.sync()
    assert not joined.failed, joined.failed
    (added,) = joined.added
    assert added.scope == C1 and added.restored is not None
    assert rows(newcomer, C1, Registration, "head") == rows(phones["sup"], C1, Registration, "head")


def test_the_learning_group_learners_see_their_own(world):
    world.scope(G, "group", {"l1": "learner", "l2": "learner", "teach": "teacher"})
    l1a, l1b, l2, teach = (
        world.device("l1", "a"),
        world.device("l1", "b"),
        world.device("l2"),
        world.device("teach"),
    )
    for device in (l1a, l1b, l2, teach):
        report = device.sync()
        assert not report.failed, report.failed
    with l1a.scope(G).bound():
        Progress.create(course="c1", completed=3, learner="l1")
    with l1b.scope(G).bound():
        Progress.create(course="c2", completed=1, learner="l1")
    with l2.scope(G).bound():
        Progress.create(course="c1", completed=5, learner="l2")
    for device in (l1a, l1b, l2, l1a, l1b):
        report = device.sync()
        assert not report.failed, report.failed
    assert rows(l1a, G, Progress, "course") == ["c1", "c2"]  # her own, from both devices
    assert rows(l1b, G, Progress, "course") == ["c1", "c2"]
    assert rows(l2, G, Progress, "learner") == ["l2"]  # never another learner's
    assert teach.sync().reports[G].downloaded == {"progress": 3}
    assert rows(teach, G, Progress, "learner") == ["l1", "l1", "l2"]
