"""The rules matrix of scopes: role x table x operation, allowed or denied by the rules
``replicator rules --scopes`` compiles from tests/scope_models.py's declaration.

Every case runs as a signed-in user (the real google-cloud-firestore client through
the TokenGate, no admin); the only admin writes are what a server does: creating the
scopes (their ``kind``), their first admins and members, and the reference data.
Run with ``-s`` to see the table.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from replicator import AccessDeniedError
from replicator.scopes.members import member_document
from replicator.stores.base import DeviceRecord
from tests.scope_models import MODELS, SCOPES
from tests.stores.test_rules_matrix import (
    NOW,
    PAST,
    Case,
    Matrix,
    create,
    delete,
    get,
    merge,
    query,
    update,
)

C = "scopes/campaign-1"
G = "scopes/group-1"
CAMPAIGN = {"col-a": "collector", "col-b": "collector", "sup": "supervisor", "adm": "admin"}
GROUP = {"l1": "learner", "l2": "learner", "teach": "teacher"}


def _reg(doc_id: str, collector: str, device: str | None = None, **changes: Any) -> dict[str, Any]:
    when = dt.datetime.now(dt.timezone.utc)
    data = {
        "id": doc_id,
        "head": "h",
        "members": 3,
        "collector": collector,
        "createdOn": when,
        "updatedOn": when,
        "updatedBy": device or f"{collector}-phone",
        "deleted": False,
        "changedAt": NOW,
    }
    return {**data, **changes}


def _progress(doc_id: str, learner: str, **changes: Any) -> dict[str, Any]:
    data = {
        "id": doc_id,
        "course": "c1",
        "completed": 1,
        "learner": learner,
        "updatedBy": f"{learner}-phone",
        "deleted": False,
        "changedAt": NOW,
    }
    return {**data, **changes}


@pytest.fixture
def world(as_scope_users):
    """A campaign (two collectors, a supervisor, an admin, a member since removed) and a
    learning group (two learners, a teacher); each member's phone registered in its scope;
    rows of each."""
    users = as_scope_users(MODELS, SCOPES, retention=dt.timedelta(seconds=2))
    admin = users.service_client()
    admin.document(C).set({"kind": "campaign"})
    admin.document(G).set({"kind": "group"})
    for scope, kind, members in (
        (C, "campaign", {**CAMPAIGN, "ex": "collector"}),
        (G, "group", GROUP),
    ):
        for uid, role in members.items():
            admin.document(f"{scope}/members/{uid}").set(member_document(uid, kind, role))
            users.remote(uid, root=scope).register(DeviceRecord(f"{uid}-phone", "p", "t", "1"))
    admin.document(f"{C}/forms/f1").set({"name": "f", "version": 1, "deleted": False})
    clients = {uid: users.client(uid) for uid in [*CAMPAIGN, *GROUP, "ex", "out"]}
    for uid in ("col-a", "col-b", "ex"):
        clients[uid].document(f"{C}/registrations/{uid}-1").create(_reg(f"{uid}-1", uid))
    for uid in ("l1", "l2"):
        clients[uid].document(f"{G}/progress/{uid}-p").create(_progress(f"{uid}-p", uid))
    for uid in ("col-a", "col-b"):  # tombstones past the retention, for the purge
        tomb = _reg(f"{uid}-t", uid, deleted=True)
        clients[uid].document(f"{C}/registrations/{uid}-t").create(tomb)
    clients["adm"].document(f"{C}/members/ex").delete()  # removed, as an admin does
    time.sleep(2.5)
    return users, clients


def test_the_scope_rules_matrix(world):
    users, c = world
    m = Matrix()
    for case in (
        *_collectors(c),
        *_supervisor_and_admin(c),
        *_outsiders(c),
        *_members(c),
        *_discovery(c),
        *_learning_group(c),
        *_purge_and_horizons(c),
    ):
        m.check(*case)
    print("\n" + m.table())
    wrong = [r for r in m.rows if r[4] != r[5]]
    assert not wrong, "\n" + m.table()
    allowed = sum(1 for r in m.rows if r[5])
    assert (allowed, len(m.rows) - allowed) == (29, 53)
    assert users.gate.refused == {}  # every refusal above came from the rules


def _collectors(c: dict[str, Any]) -> list[Case]:
    a, r = c["col-a"], f"{C}/registrations"
    return [
        ("col-a", "registrations", "read", "her own", True, get(a, f"{r}/col-a-1")),
        ("col-a", "registrations", "read", "another collector's", True, get(a, f"{r}/col-b-1")),
        ("col-a", "registrations", "list", "the download's query", True, query(a, r)),
        ("col-a", "registrations", "create", "as herself", True,
         create(a, f"{r}/col-a-2", _reg("col-a-2", "col-a"))),
        ("col-a", "registrations", "create", "in another collector's name", False,
         create(a, f"{r}/x1", _reg("x1", "col-b", device="col-a-phone"))),
        ("col-a", "registrations", "create", "with another user's device", False,
         create(a, f"{r}/x2", _reg("x2", "col-a", device="col-b-phone"))),
        ("col-a", "registrations", "create", "an unknown field", False,
         create(a, f"{r}/x3", _reg("x3", "col-a", secret=1))),
        ("col-a", "registrations", "create", "forged changedAt", False,
         create(a, f"{r}/x4", _reg("x4", "col-a", changedAt=PAST))),
        ("col-a", "registrations", "update", "her own", True,
         update(a, f"{r}/col-a-1", {"head": "h2", "updatedBy": "col-a-phone"})),
        ("col-a", "registrations", "update", "another collector's", False,
         update(a, f"{r}/col-b-1", {"head": "mine", "updatedBy": "col-a-phone"})),
        ("col-a", "registrations", "update", "give her own to another collector", False,
         update(a, f"{r}/col-a-1", {"collector": "col-b", "updatedBy": "col-a-phone"})),
        ("col-a", "registrations", "delete", "her own, as a tombstone", True,
         update(a, f"{r}/col-a-2", {"deleted": True, "updatedBy": "col-a-phone"})),
        ("col-a", "registrations", "delete", "another's, as a tombstone", False,
         update(a, f"{r}/col-b-1", {"deleted": True, "updatedBy": "col-a-phone"})),
        ("col-a", "registrations", "delete", "a live document", False, delete(a, f"{r}/col-a-1")),
        ("col-a", "forms", "read", "reference data", True, get(a, f"{C}/forms/f1")),
        ("col-a", "forms", "list", "reference data", True, query(a, f"{C}/forms")),
        ("col-a", "forms", "update", "reference data", False,
         update(a, f"{C}/forms/f1", {"version": 2, "updatedBy": "col-a-phone"})),
        ("col-a", "devices", "list", "the scope's devices", True,
         lambda: a.collection(f"{C}/devices").get()),
        ("col-a", "scope", "read", "the scope's document", True, get(a, C)),
        ("col-a", "scope", "update", "its kind", False,
         lambda: a.document(C).update({"kind": "group"})),
    ]  # fmt: skip


def _supervisor_and_admin(c: dict[str, Any]) -> list[Case]:
    s, ad, r = c["sup"], c["adm"], f"{C}/registrations"
    return [
        ("sup", "registrations", "list", "all of the campaign", True, query(s, r)),
        ("sup", "registrations", "update", "a collector's", True,
         update(s, f"{r}/col-b-1", {"members": 4, "updatedBy": "sup-phone"})),
        ("sup", "registrations", "update", "its owner column", False,
         update(s, f"{r}/col-b-1", {"collector": "sup", "updatedBy": "sup-phone"})),
        ("sup", "registrations", "delete", "a collector's, as a tombstone", True,
         update(s, f"{r}/ex-1", {"deleted": True, "updatedBy": "sup-phone"})),
        ("sup", "registrations", "create", "not granted", False,
         create(s, f"{r}/s1", _reg("s1", "sup"))),
        ("sup", "forms", "create", "reference data", False,
         create(s, f"{C}/forms/f2", {"name": "g", "version": 1, "updatedBy": "sup-phone",
                                     "deleted": False, "changedAt": NOW})),
        ("adm", "registrations", "create", "as herself", True,
         create(ad, f"{r}/a1", _reg("a1", "adm"))),
    ]  # fmt: skip


def _outsiders(c: dict[str, Any]) -> list[Case]:
    o, ex, r = c["out"], c["ex"], f"{C}/registrations"
    return [
        ("out", "registrations", "read", "not a member", False, get(o, f"{r}/col-a-1")),
        ("out", "registrations", "list", "not a member", False, query(o, r)),
        ("out", "registrations", "create", "not a member", False,
         create(o, f"{r}/o1", _reg("o1", "out"))),
        ("out", "forms", "read", "not a member", False, get(o, f"{C}/forms/f1")),
        ("out", "devices", "create", "register a device in the campaign", False,
         merge(o, f"{C}/devices/out-phone", _device("out-phone", "out"))),
        ("out", "scope", "read", "the scope's document", False, get(o, C)),
        ("out", "members", "create", "make herself a member", False,
         merge(o, f"{C}/members/out", {"role": "collector"})),
        ("ex", "registrations", "read", "removed: her own former row", False,
         get(ex, f"{r}/ex-1")),
        ("ex", "registrations", "create", "removed", False,
         create(ex, f"{r}/ex-2", _reg("ex-2", "ex"))),
        ("ex", "devices", "update", "removed: her device's record", False,
         merge(ex, f"{C}/devices/ex-phone", _device("ex-phone", "ex"))),
        ("ex", "members", "create", "removed: join again", False,
         merge(ex, f"{C}/members/ex", {"role": "collector"})),
    ]  # fmt: skip


def _device(installation_id: str, owner: str) -> dict[str, Any]:
    return {
        "installationId": installation_id,
        "name": "p",
        "platform": "t",
        "appVersion": "1",
        "watermarks": {},
        "lastSync": NOW,
        "owner": owner,
    }


def _members(c: dict[str, Any]) -> list[Case]:
    a, s, ad, mem = c["col-a"], c["sup"], c["adm"], f"{C}/members"
    added = {**member_document("new", "campaign", "collector", added_by="adm"), "changedAt": NOW}

    def member(uid: str, role: str = "collector", kind: str = "campaign") -> dict[str, Any]:
        return member_document(uid, kind, role)

    return [
        ("col-a", "members", "read", "her own member document", True, get(a, f"{mem}/col-a")),
        ("col-a", "members", "read", "another member's", False, get(a, f"{mem}/col-b")),
        ("col-a", "members", "list", "the members", False, lambda: a.collection(mem).get()),
        ("col-a", "members", "update", "promote herself to admin", False,
         merge(a, f"{mem}/col-a", {"role": "admin"})),
        ("col-a", "members", "create", "add a member", False,
         merge(a, f"{mem}/new", member("new"))),
        ("sup", "members", "update", "promote herself", False,
         merge(s, f"{mem}/sup", {"role": "admin"})),
        ("sup", "members", "update", "promote a collector", False,
         merge(s, f"{mem}/col-b", {"role": "supervisor"})),
        ("adm", "members", "list", "the members", True, lambda: ad.collection(mem).get()),
        ("adm", "members", "create", "add a collector", True, merge(ad, f"{mem}/new", added)),
        ("adm", "members", "create", "a role of another kind (teacher)", False,
         merge(ad, f"{mem}/new2", member("new2", "teacher"))),
        ("adm", "members", "create", "an unknown field", False,
         merge(ad, f"{mem}/new3", {**member("new3"), "admin": True})),
        ("adm", "members", "create", "addedBy another user", False,
         merge(ad, f"{mem}/new4", {**member("new4"), "addedBy": "sup"})),
        ("adm", "members", "update", "her own role (demote herself)", False,
         merge(ad, f"{mem}/adm", {"role": "collector"})),
        ("adm", "members", "update", "make a collector supervisor", True,
         merge(ad, f"{mem}/new", {"role": "supervisor"})),
        ("adm", "members", "create", "uid not the document's", False,
         merge(ad, f"{mem}/new5", member("col-b"))),
        ("adm", "members", "create", "kind not the scope's", False,
         merge(ad, f"{mem}/new6", member("new6", kind="group"))),
        ("adm", "members", "create", "no uid nor kind", False,
         merge(ad, f"{mem}/new7", {"role": "collector"})),
        ("adm", "members", "delete", "remove a member", True, delete(ad, f"{mem}/new")),
        ("adm", "members", "delete", "remove herself", False, delete(ad, f"{mem}/adm")),
    ]  # fmt: skip


def _discovery(c: dict[str, Any]) -> list[Case]:
    """The one query a device learns its scopes with: members across scopes by uid."""

    def mine(client: Any, uid: str | None) -> Any:
        group = client.collection_group("members")
        if uid is not None:
            group = group.where(filter=firestore.FieldFilter("uid", "==", uid))
        return lambda: group.get()

    a, out = c["col-a"], c["out"]
    return [
        ("col-a", "members*", "list", "her own, in every scope", True, mine(a, "col-a")),
        ("col-a", "members*", "list", "another user's", False, mine(a, "col-b")),
        ("col-a", "members*", "list", "everyone's", False, mine(a, None)),
        ("out", "members*", "list", "her own (none)", True, mine(out, "out")),
        ("adm", "members*", "list", "everyone's, as an admin", False, mine(c["adm"], None)),
    ]  # fmt: skip


def _learning_group(c: dict[str, Any]) -> list[Case]:
    l1, t, a, p = c["l1"], c["teach"], c["col-a"], f"{G}/progress"
    mine = firestore.FieldFilter("learner", "==", "l1")
    return [
        ("l1", "progress", "read", "her own", True, get(l1, f"{p}/l1-p")),
        ("l1", "progress", "read", "another learner's", False, get(l1, f"{p}/l2-p")),
        ("l1", "progress", "list", "all (an unfiltered query)", False, query(l1, p)),
        ("l1", "progress", "list", "filtered on learner == her", True,
         lambda: l1.collection(p).where(filter=mine).get()),
        ("l1", "progress", "create", "as herself", True,
         create(l1, f"{p}/l1-q", _progress("l1-q", "l1"))),
        ("l1", "progress", "create", "in another learner's name", False,
         create(l1, f"{p}/l1-x", _progress("l1-x", "l2", updatedBy="l1-phone"))),
        ("l1", "progress", "update", "her own", True,
         update(l1, f"{p}/l1-p", {"completed": 2, "updatedBy": "l1-phone"})),
        ("l1", "progress", "update", "another learner's", False,
         update(l1, f"{p}/l2-p", {"completed": 9, "updatedBy": "l1-phone"})),
        ("l1", "progress", "delete", "as a tombstone (not granted)", False,
         update(l1, f"{p}/l1-p", {"deleted": True, "updatedBy": "l1-phone"})),
        ("teach", "progress", "list", "the group's progress", True, query(t, p)),
        ("teach", "progress", "update", "a learner's (read only)", False,
         update(t, f"{p}/l1-p", {"completed": 5, "updatedBy": "teach-phone"})),
        ("col-a", "progress", "read", "a campaign member, not in the group", False,
         get(a, f"{p}/l1-p")),
        ("col-a", "registrations", "create", "a campaign's table in the group", False,
         create(a, f"{G}/registrations/g1", _reg("g1", "col-a"))),
    ]  # fmt: skip


def _purge_and_horizons(c: dict[str, Any]) -> list[Case]:
    a, s, r, h = c["col-a"], c["sup"], f"{C}/registrations", f"{C}/replicator_meta/horizons"
    raise_it = {"horizons": {"registrations": "x"}}
    return [
        ("col-a", "registrations", "delete", "another's expired tombstone", False,
         delete(a, f"{r}/col-b-t")),
        ("col-a", "registrations", "delete", "her own expired tombstone (purge)", True,
         delete(a, f"{r}/col-a-t")),
        ("sup", "registrations", "delete", "a collector's expired tombstone", True,
         delete(s, f"{r}/col-b-t")),
        ("col-a", "replicator_meta", "update", "raise a horizon", True, merge(a, h, raise_it)),
        ("col-a", "replicator_meta", "update", "an unknown field", False,
         merge(a, h, {**raise_it, "other": 1})),
        ("l1", "replicator_meta", "update", "a learner (no delete grant)", False,
         merge(c["l1"], f"{G}/replicator_meta/horizons", raise_it)),
        ("out", "replicator_meta", "read", "not a member", False, get(c["out"], h)),
    ]  # fmt: skip


def test_the_users_rules_alone_refuse_every_scope(as_users):
    """The matrix's allowed cases need the scopes' rules: under the rules of users' own
    roots (``firestore_rules``), a member cannot even register a device in a scope."""
    users = as_users(MODELS)
    admin = users.service_client()
    admin.document(C).set({"kind": "campaign"})
    admin.document(f"{C}/members/col-a").set({"role": "collector"})
    with pytest.raises(AccessDeniedError, match="scopes/campaign-1"):
        users.remote("col-a", root=C).register(DeviceRecord("col-a-phone", "p", "t", "1"))
    with pytest.raises(gexc.PermissionDenied):
        users.client("col-a").document(f"{C}/members/col-a").get()
