"""Seed 001's field campaign shared through scopes, by signed-in users under the rules
``replicator rules --scopes`` compiles: the official emulators here, a real project
the same way.

* A **server** (admin credentials, never on a device) creates two campaigns, their
  first members and their form schemas (reference data members only read).
* Collectors and a supervisor sign in (Firebase Authentication). Each device is a
  ``ScopedReplicator``: every sync discovers the user's campaigns in one query and
  syncs each in a database file of its own, as the user, so the rules decide.
* Collectors register households; the supervisor sees her campaign's, never the
  other campaign's. A collector of both campaigns syncs both.
* The campaign's admin (a signed-in user) removes a collector who has a registration
  not uploaded yet, rotating the campaign's snapshot key in the same batch: her next
  sync sets the registration aside in a file, with the reason, and purges the
  campaign from her device.
* A collector added later starts from the campaign's snapshot, then catches up.

If FIRESTORE_EMULATOR_HOST / FIREBASE_AUTH_EMULATOR_HOST are not set, the script
starts the emulators itself (as examples/firestore_sync.py does).

Run: .venv/bin/python examples/firestore_field_campaign.py [DIRECTORY]
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import peewee
from firestore_sync import PROJECT, start_emulators
from google.cloud import firestore as gfs

from replicator import (
    DirectoryBlobStore,
    FirebaseAuth,
    Replicator,
    ScopedReplicator,
    SyncModel,
)
from replicator.auth import MemoryTokenStore
from replicator.scopes import ScopeKind, Scopes, scoped_rules
from replicator.scopes.keys import remove_member, rotate
from replicator.scopes.members import member_document
from replicator.stores.firestore import FirestoreRemote
from replicator.stores.firestore_user import UserClient
from replicator.testing import FirestoreEmulator


class Household(SyncModel):
    head = peewee.TextField()
    members = peewee.IntegerField(default=1)
    collector = peewee.TextField()  # the collector's uid: the row's owner

    class Meta:
        table_name = "households"


class FormSchema(SyncModel):
    name = peewee.TextField()

    class Meta:
        table_name = "form_schemas"


MODELS = [Household, FormSchema]
CAMPAIGN = ScopeKind(
    "campaign",
    roles=["collector", "supervisor", "admin"],
    admins=["admin"],
    tables={
        "households": {
            "collector": "read create update:own delete:own",
            "supervisor": "read update delete",
            "admin": "read create update delete",
        },
        "form_schemas": {"*": "read"},
    },
)
SCOPES = Scopes([CAMPAIGN], owners={"households": "collector"})


def main(directory: Path, emulator: FirestoreEmulator) -> None:
    emulator.load_rules(PROJECT, scoped_rules(MODELS, SCOPES).rules)
    people = {name: _sign_up(name) for name in ("ada", "bea", "cy", "sam", "ines")}
    uid = {name: session.uid for name, session in people.items()}
    server = gfs.Client(project=PROJECT)  # admin: a server's credentials, past the rules
    north, south = f"north-{uuid.uuid4().hex[:6]}", f"south-{uuid.uuid4().hex[:6]}"
    for scope, members in (
        (north, {"ada": "collector", "bea": "collector", "sam": "supervisor", "ines": "admin"}),
        (south, {"ada": "collector"}),
    ):
        server.document(f"scopes/{scope}").set({"kind": "campaign"})
        rotate(server, scope, by="server")  # the campaign's first snapshot key
        for name, role in members.items():
            doc = member_document(uid[name], "campaign", role)
            server.document(f"scopes/{scope}/members/{uid[name]}").set(doc)
        forms = Replicator(
            peewee.SqliteDatabase(str(directory / f"server-{scope}.db")),
            [FormSchema],
            FirestoreRemote(server, f"scopes/{scope}"),
        )
        with forms.bound():
            FormSchema.create(name=f"household form of {scope.split('-')[0]}")
        forms.sync()

    def device(name: str) -> ScopedReplicator:
        return ScopedReplicator.for_user(
            directory / f"{name}-phone",
            MODELS,
            SCOPES,
            people[name],
            PROJECT,
            blobs_for=lambda m: DirectoryBlobStore(directory / "bucket" / m.scope),
            scope_keys=True,  # snapshots sealed with the campaign's key generations
            device_name=f"{name}-phone",
        )

    phones = {name: device(name) for name in ("ada", "bea", "sam")}
    for name, phone in phones.items():
        report = phone.sync()
        print(f"{name}: in {sorted(c.scope.split('-')[0] for c in report.added)}")
    for name, scope in (("ada", north), ("ada", south), ("bea", north), ("bea", north)):
        with phones[name].scope(scope).bound():
            Household.create(head=f"household of {name}", collector=uid[name])
    for name in ("ada", "bea", "sam"):
        phones[name].sync()
    with phones["sam"].scope(north).bound():
        seen = sorted(h.head for h in Household.select())
    print("sam (supervisor of north) sees:", seen)
    assert seen == ["household of ada", "household of bea", "household of bea"]

    # the campaign's admin, signed in, removes bea, who has a household not uploaded
    with phones["bea"].scope(north).bound():
        Household.create(head="registered after her removal", collector=uid["bea"])
    # removing her writes the campaign's next key generation in the same batch: she
    # cannot open the snapshots published after her removal
    generation = remove_member(UserClient(people["ines"], PROJECT), north, uid["bea"])
    print(f"ines removed bea from north; snapshot key generation {generation} from now on")
    (removed,) = phones["bea"].sync().removed
    print(f"bea lost north: {removed.pending} write set aside in {removed.set_aside.name}")
    assert phones["bea"].memberships() == []

    # cy joins: restored from north's snapshot, then caught up
    for phone in phones.values():
        phone.sync()
    added_by = member_document(uid["cy"], "campaign", "collector", added_by=uid["ines"])
    admin = UserClient(people["ines"], PROJECT)
    admin.document(f"scopes/{north}/members/{uid['cy']}").set(
        {**added_by, "changedAt": gfs.SERVER_TIMESTAMP}
    )
    (joined,) = device("cy").sync().added
    print(f"cy joined north, restored from snapshot {joined.restored}")


def _sign_up(name: str) -> Any:
    email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
    return FirebaseAuth(store=MemoryTokenStore()).sign_up(email, "correct horse battery")


def run(directory: Path) -> None:
    with ExitStack() as stack:
        main(directory, start_emulators(stack))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        run(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(Path(tmp))
