"""A campaign shared through a scope, synced by today's engine as its members: three
collectors and a supervisor each sync ``scopes/campaign-1`` through
``UserFirestoreRemote(..., root="scopes/campaign-1")`` under the rules compiled from
tests/scope_models.py's declaration, behind the TokenGate. The only admin is a server:
it creates the scope, its first members and the reference data; the campaign's own
admin (a signed-in user) removes a collector."""

from __future__ import annotations

import peewee
import pytest

from replicator import AccessDeniedError, Replicator
from replicator.stores.firestore import FirestoreRemote
from tests.scope_models import CAMPAIGN_MODELS, MODELS, SCOPES, Form, Registration

C = "scopes/campaign-1"
MEMBERS = {"col-a": "collector", "col-b": "collector", "col-c": "collector", "sup": "supervisor"}


def test_a_campaigns_members_sync_its_root_and_no_one_else_can(tmp_path, as_scope_users):
    users = as_scope_users(MODELS, SCOPES)
    admin = users.service_client()
    admin.document(C).set({"kind": "campaign"})
    for uid, role in MEMBERS.items():
        admin.document(f"{C}/members/{uid}").set({"role": role})
    server = Replicator(
        peewee.SqliteDatabase(str(tmp_path / "server.db")),
        [Form],
        FirestoreRemote(admin, C),
        device_name="server",
    )
    with server.bound():
        Form.create(name="household", version=1)
    server.sync()

    def device(uid: str) -> Replicator:
        db = peewee.SqliteDatabase(str(tmp_path / f"{uid}.db"), pragmas={"foreign_keys": 1})
        remote = users.remote(uid, root=C)
        return Replicator(
            db, CAMPAIGN_MODELS, remote, device_name=f"{uid}-phone", download_only=[Form]
        )

    phones = {uid: device(uid) for uid in MEMBERS}
    for uid in ("col-a", "col-b", "col-c"):
        with phones[uid].bound():
            for n in range(2):
                Registration.create(head=f"{uid} {n}", collector=uid)
        assert phones[uid].sync().uploaded == {"registrations": 2}

    sup = phones["sup"]
    assert sup.sync().downloaded == {"registrations": 6, "forms": 1}
    with sup.bound():
        seen = sorted(r.head for r in Registration.select())
        assert seen == sorted(f"{u} {n}" for u in ("col-a", "col-b", "col-c") for n in range(2))
        assert [f.name for f in Form.select()] == ["household"]
        corrected = Registration.get(Registration.head == "col-a 0")
        corrected.members = 7
        corrected.save()
    corrected_sync = sup.sync()
    assert corrected_sync.uploaded == {"registrations": 1} and not corrected_sync.rejected
    phones["col-a"].sync()
    with phones["col-a"].bound():
        assert Registration.get(Registration.head == "col-a 0").members == 7

    outsider = device("out")
    with pytest.raises(AccessDeniedError, match="scopes/campaign-1"):
        outsider.sync()

    # a collector removed by the campaign's admin (a signed-in user, under the rules):
    # her next sync is refused, and what she had not synced stays on her device, dirty
    admin.document(f"{C}/members/adm").set({"role": "admin"})
    users.client("adm").document(f"{C}/members/col-c").delete()
    with phones["col-c"].bound():
        Registration.create(head="written after the removal", collector="col-c")
    with pytest.raises(AccessDeniedError, match="col-c"):
        phones["col-c"].sync()
    with phones["col-c"].bound():
        late = Registration.get(Registration.head == "written after the removal")
        assert late.is_dirty
    assert users.gate.refused == {}
