"""The property of the multi-scope device: random grants, revocations, role changes,
writes and syncs across users and devices converge. At the end every device holds
exactly the scopes its user belongs to, each holding exactly the scope's rows, and
every row an app wrote is either in its scope's remote or in a set-aside file of the
device that wrote it: nothing is lost without a report.

The directory here is the world's own table of members (discovery's logic, not its
query: the Firestore query is tested under the rules in test_scoped_device.py);
scopes are embedded remotes, devices real SQLite files.
``REPLICATOR_SCOPE_SEEDS`` (default 6) and ``REPLICATOR_SCOPE_STEPS`` (default 60)
size the run."""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import peewee
import pytest

from replicator import EmbeddedRemote
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.members import Membership
from replicator.scopes.plan import database_path
from tests.scope_models import MODELS, SCOPES, Registration

SCOPE_IDS = ["s1", "s2", "s3"]
USERS = {"u1": ["u1-a", "u1-b"], "u2": ["u2-a"], "u3": ["u3-a"]}
ROLES = ["collector", "supervisor"]


class World:
    def __init__(self, tmp: Path, rng: random.Random) -> None:
        self.tmp, self.rng = tmp, rng
        (tmp / "remotes").mkdir()
        self.members: dict[str, dict[str, str]] = {s: {} for s in SCOPE_IDS}
        self.written: dict[str, tuple[str, str]] = {}  # head -> (device, scope)
        self.devices = {d: self._device(uid, d) for uid, names in USERS.items() for d in names}
        self.steps: list[str] = []
        #: Replicators an app kept from device.scope(): written to after a loss too
        self.handles: dict[str, dict[str, Any]] = {d: {} for d in self.devices}

    def _device(self, uid: str, name: str) -> ScopedReplicator:
        world = self

        class Directory:
            def memberships(self) -> list[Membership]:
                return [
                    Membership(s, "campaign", roles[uid])
                    for s, roles in sorted(world.members.items())
                    if uid in roles
                ]

        return ScopedReplicator(
            self.tmp / name,
            MODELS,
            SCOPES,
            uid=uid,
            directory=Directory(),
            remote_for=lambda root, owned: EmbeddedRemote(self.remote_path(root)),
            device_name=name,
        )

    def remote_path(self, root: str) -> Path:
        return self.tmp / "remotes" / f"{root.replace('/', '-')}.db"

    def step(self) -> None:
        what = self.rng.choice(
            ["grant", "grant", "revoke", "role", "write", "write", "stale", "sync"]
        )
        uid, scope = self.rng.choice(list(USERS)), self.rng.choice(SCOPE_IDS)
        name = self.rng.choice(list(self.devices))
        if what == "grant":
            self.members[scope].setdefault(uid, self.rng.choice(ROLES))
        elif what == "revoke":
            self.members[scope].pop(uid, None)
        elif what == "role" and uid in self.members[scope]:
            self.members[scope][uid] = self.rng.choice(ROLES)
        elif what == "write":
            device = self.devices[name]
            known = [m.scope for m in device.memberships()]
            if not known:
                return
            where = self.rng.choice(known)
            head = f"{name}-{len(self.written)}"
            self.handles[name][where] = handle = device.scope(where)
            with handle.bound():
                Registration.create(head=head, collector=name.split("-")[0])
            self.written[head] = (name, where)
        elif what == "stale" and self.handles[name]:
            # through a Replicator kept from before: after a loss, a loud failure
            where = self.rng.choice(sorted(self.handles[name]))
            head = f"{name}-{len(self.written)}-stale"
            try:
                with self.handles[name][where].bound():
                    Registration.create(head=head, collector=name.split("-")[0])
            except peewee.OperationalError as exc:
                assert "no such table" in str(exc)
                return
            self.written[head] = (name, where)
        else:
            self.devices[name].sync()
        self.steps.append(f"{what} {uid} {scope} {name}")

    def remote_heads(self, scope: str) -> set[str]:
        path = self.remote_path(f"scopes/{scope}")
        if not path.exists():
            return set()
        docs = EmbeddedRemote(path).all_docs("registrations")
        return {d.data["head"] for d in docs.values() if not d.deleted}

    def set_aside(self, name: str) -> set[str]:
        folder = self.tmp / name / "set-aside"
        heads = set()
        for path in folder.glob("*.jsonl") if folder.exists() else []:
            for line in path.read_text().splitlines():
                heads.add(json.loads(line)["row"]["head"])
        return heads


@pytest.mark.parametrize("seed", range(int(os.environ.get("REPLICATOR_SCOPE_SEEDS", "6"))))
def test_random_grants_revocations_writes_and_syncs_converge(tmp_path, seed):
    world = World(tmp_path, random.Random(seed))
    for _ in range(int(os.environ.get("REPLICATOR_SCOPE_STEPS", "60"))):
        world.step()
    for _ in range(2):
        for device in world.devices.values():
            report = device.sync()
            assert not report.failed, (report.failed, world.steps)
    for name, device in world.devices.items():
        uid = name.split("-")[0]
        mine = sorted(s for s, roles in world.members.items() if uid in roles)
        assert [m.scope for m in device.memberships()] == mine, (name, world.steps)
        files = sorted((tmp_path / name).glob("scope-*.db"))
        assert files == [database_path(tmp_path / name, s) for s in mine], (name, world.steps)
        for scope in mine:
            with device.scope(scope).bound():
                held = {r.head for r in Registration.select()}
            assert held == world.remote_heads(scope), (name, scope, world.steps)
            assert device.scope(scope).pending_count() == 0
    uploaded = {s: world.remote_heads(s) for s in SCOPE_IDS}
    for head, (name, scope) in world.written.items():
        assert head in uploaded[scope] or head in world.set_aside(name), (head, world.steps)
    device.close()


def test_an_app_thread_writing_while_its_scope_is_lost_loses_nothing(tmp_path):
    """An app thread keeps writing into a scope (its own connection) while the sync
    thread loses the scope: every write that returned is in the set-aside file, and
    every later one fails loudly (the tables are gone) instead of landing in a file
    about to be deleted."""
    world = World(tmp_path, random.Random(0))
    world.members["s1"]["u2"] = "collector"
    device = world.devices["u2-a"]
    device.sync()
    handle = device.scope("s1")
    committed: list[str] = []
    failures: list[BaseException] = []
    started = threading.Event()

    def app() -> None:
        n = 0
        while True:
            try:
                with handle.bound():
                    Registration.create(head=f"w{n}", collector="u2")
            except peewee.OperationalError as exc:
                failures.append(exc)
                return
            committed.append(f"w{n}")
            n += 1
            if n == 20:
                started.set()

    thread = threading.Thread(target=app)
    thread.start()
    assert started.wait(30)
    del world.members["s1"]["u2"]
    report = device.sync()
    thread.join(30)
    (removed,) = report.removed
    kept = {json.loads(line)["row"]["head"] for line in removed.set_aside.read_text().splitlines()}
    assert set(committed) == kept, set(committed) ^ kept
    assert failures and "no such table" in str(failures[0])
    device.close()
