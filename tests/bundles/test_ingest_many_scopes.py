"""One ingest service for every scope (issue 27's field campaign): each request names
its scope, the service checks the scope and the caller's membership on every bundle,
and the rows land in that scope's root only, under its kind's declaration. Devices are
``ScopedReplicator``s of signed-in users under the rules ``replicator rules --scopes``
compiles (Firestore emulator behind the TokenGate); the service (uvicorn) holds admin
credentials, so only its own checks stand between a bundle and a scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replicator import Bundles, DirectoryBlobStore, EmbeddedRemote, HttpIngest, Ingestor
from replicator.auth.verify import IdTokenVerifier
from replicator.bundles.auth import Caller, SignedInCallers
from replicator.bundles.scoped import ScopeRoots
from replicator.errors import ConfigurationError
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.members import member_document
from replicator.stores.base import DeviceRecord
from replicator.stores.firestore import FirestoreRemote
from replicator.stores.ingest import IngestRequest, StoreIngest
from tests.bundles.kit import WHEN, put_registrations
from tests.scope_models import MODELS, SCOPES, Registration

C1, C2 = "campaign-1", "campaign-2"
LATER = "2031-01-01 00:00:00"


def _row(n: int, collector: str, **over: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "head": f"head {n}",
        "members": 2,
        "collector": collector,
        "createdOn": WHEN,
        "updatedOn": WHEN,
        "updatedBy": "x",
        **over,
    }


class Field:
    """A project under the scopes' rules, one ingest service for all its scopes, and
    the devices of its users."""

    def __init__(self, users: Any, tmp: Path) -> None:
        self.users, self.tmp = users, tmp
        self.admin = users.service_client()
        self.bucket = DirectoryBlobStore(tmp / "bucket")
        roots = ScopeRoots.firestore(SCOPES, self.admin, timeout=10.0)
        self.ingestor = Ingestor(self.bucket, roots.top, [Registration], scopes=roots)
        verifier = IdTokenVerifier(users.project, emulator=True)
        self.server = self.ingestor.serve(auth=SignedInCallers(verifier))

    def scope(self, scope: str, kind: str, members: dict[str, str]) -> None:
        self.admin.document(f"scopes/{scope}").set({"kind": kind})
        for uid, role in members.items():
            self.admin.document(f"scopes/{scope}/members/{uid}").set(
                member_document(uid, kind, role)
            )

    def device(self, uid: str) -> ScopedReplicator:
        """``uid``'s phone: a collector's registrations of every scope bundled to the
        one service, each request naming its scope."""
        tokens = self.users.tokens(uid)
        mine = DirectoryBlobStore(self.tmp / "bucket" / "users" / uid)

        def bundles_for(member: Any) -> Bundles | None:
            if member.role != "collector":  # a supervisor downloads the registrations
                return None
            service = HttpIngest(self.server.url, tokens=tokens, scope=member.scope)
            return Bundles(mine, service, [Registration])

        return ScopedReplicator.for_user(
            self.tmp / uid,
            MODELS,
            SCOPES,
            tokens,
            self.users.project,
            timeout=10.0,
            device_name=f"{uid}-phone",
            bundles_for=bundles_for,
        )

    def send(self, uid: str, scope: str, rows: list[dict[str, Any]]) -> Any:
        """A bundle of ``rows`` made by hand in ``uid``'s folder, its request naming
        ``scope``, posted signed in as ``uid``; the service's answer."""
        request = self.request(uid, rows)
        service = HttpIngest(self.server.url, tokens=self.users.tokens(uid), scope=scope)
        try:
            return service.submit(request)
        finally:
            service.close()

    def request(self, uid: str, rows: list[dict[str, Any]]) -> IngestRequest:
        return put_registrations(self.bucket, f"users/{uid}/", f"{uid}-laptop", rows)

    def stored(self, scope: str, collection: str = "registrations") -> dict[str, Any]:
        root = FirestoreRemote(self.admin, root=f"scopes/{scope}", timeout=10.0)
        return {d.id: dict(d.data) for d in root.pull(collection, None, 100).docs}


def _paths(client: Any) -> list[str]:
    """Every document path of the project, through the admin client."""
    out: list[str] = []

    def walk(collections: Any) -> None:
        for coll in collections:
            for ref in coll.list_documents():
                out.append(ref.path)
                walk(ref.collections())

    walk(client.collections())
    return sorted(out)


@pytest.fixture
def field(as_scope_users, tmp_path):
    made = Field(as_scope_users(MODELS, SCOPES), tmp_path)
    made.scope(C1, "campaign", {"col-a": "collector", "col-b": "collector", "sup-1": "supervisor"})
    made.scope(C2, "campaign", {"col-a": "collector", "sup-2": "supervisor"})
    yield made
    made.server.close()


def _heads(device: ScopedReplicator, scope: str) -> list[str]:
    with device.scope(scope).bound():
        return sorted(r.head for r in Registration.select())


def test_a_collector_in_two_campaigns_bundles_into_each_through_one_service(field):
    phone = field.device("col-a")
    assert not phone.sync().failed
    for scope in (C1, C2):
        with phone.scope(scope).bound():
            Registration.create(head=f"registered in {scope}", collector="col-a")
    report = phone.sync()
    assert not report.failed, report.failed
    for scope in (C1, C2):
        assert report.reports[scope].bundled == {"registrations": 1}
        assert [d["head"] for d in field.stored(scope).values()] == [f"registered in {scope}"]

    sups = {uid: field.device(uid) for uid in ("sup-1", "sup-2")}
    for sup in sups.values():
        assert not sup.sync().failed
    assert _heads(sups["sup-1"], C1) == [f"registered in {C1}"]
    assert _heads(sups["sup-2"], C2) == [f"registered in {C2}"]
    assert [m.scope for m in sups["sup-1"].memberships()] == [C1]  # nothing of C2


def test_a_non_members_bundle_is_refused_whole_and_recorded_nowhere(field):
    before = _paths(field.admin)
    result = field.send("outsider", C1, [_row(1, "outsider")])
    assert _paths(field.admin) == before  # no row, no queue document in the campaign
    assert (result.state, result.reason) == (
        "rejected",
        f"user outsider is not a member of campaign {C1}",
    )


def test_a_removed_collectors_next_bundle_is_refused(field):
    first = field.send("col-b", C1, [_row(2, "col-b")])
    assert (first.state, first.accepted) == ("accepted", 1)
    field.admin.document(f"scopes/{C1}/members/col-b").delete()
    before = _paths(field.admin)
    result = field.send("col-b", C1, [_row(3, "col-b")])
    assert _paths(field.admin) == before
    assert (result.state, result.reason) == (
        "rejected",
        f"user col-b is not a member of campaign {C1}",
    )
    assert list(field.stored(C1)) == [_row(2, "col-b")["id"]]


def test_a_bundle_naming_one_campaign_cannot_reach_the_other(field):
    """col-a's bundle into C2 first (the service keeps her ingestor of C2), then one
    naming C1 that lists C2's row (newer) and another collector's: C2 is untouched;
    in C1, her row lands as a row of C1, col-b's is refused."""
    mine = _row(4, "col-a")
    assert field.send("col-a", C2, [mine]).accepted == 1
    copied = {**mine, "head": "moved to campaign 1", "updatedOn": LATER}
    theirs = _row(5, "col-b")
    result = field.send("col-a", C1, [copied, theirs])
    assert result.state == "accepted" and result.accepted == 1
    assert dict(result.refused) == {
        theirs["id"]: "collector must be the creating user's uid (col-a)"
    }
    assert field.stored(C2)[mine["id"]]["head"] == "head 4"
    assert {i: d["head"] for i, d in field.stored(C1).items()} == {
        mine["id"]: "moved to campaign 1"
    }


@pytest.mark.parametrize(
    ("scope", "reason"),
    [
        ("../users/col-a", "'../users/col-a' is not a scope id"),
        (f"{C1}/members/col-a", f"'{C1}/members/col-a' is not a scope id"),
        ("x" * 129, "is not a scope id"),
        ("campaign-9", "there is no scope campaign-9"),
        ("gone", "there is no scope gone"),
        ("odd", "scope odd is of kind 'campain', which this service does not declare"),
    ],
)
def test_a_bundle_naming_no_scope_of_the_declaration_is_refused(field, scope, reason):
    # a scope deleted with its member documents left behind (Firestore keeps them)
    field.admin.document("scopes/gone/members/col-a").set(
        member_document("col-a", "campaign", "collector")
    )
    field.scope("odd", "campain", {"col-a": "collector"})
    before = _paths(field.admin)
    result = field.send("col-a", scope, [_row(6, "col-a")])
    assert result.state == "rejected" and reason in result.reason
    assert _paths(field.admin) == before


def test_a_scope_of_another_kind_judges_by_that_kinds_declaration(field):
    field.scope("group-1", "group", {"col-a": "learner"})
    result = field.send("col-a", "group-1", [_row(7, "col-a")])
    assert result.state == "accepted" and result.accepted == 0
    assert dict(result.refused) == {
        _row(7, "col-a")["id"]: "a learner may not create registrations rows"
    }
    assert field.stored("group-1") == {}


# -- without the emulator -------------------------------------------------------------


def test_a_request_names_its_scope_only_when_it_has_one():
    plain = IngestRequest("b", "bundles/d/b.ndjson.gz", "0" * 64, 1, 1, "registrations", "d")
    assert "scope" not in plain.to_json()
    scoped = IngestRequest.from_json({**plain.to_json(), "scope": C1})
    assert scoped.scope == C1 and scoped.to_json()["scope"] == C1
    with pytest.raises(ValueError, match="scope must be a non-empty string"):
        IngestRequest.from_json({**plain.to_json(), "scope": 7})


def test_a_service_without_scopes_refuses_a_request_naming_one(tmp_path):
    ingestor = Ingestor(
        DirectoryBlobStore(tmp_path / "bucket"),
        EmbeddedRemote(tmp_path / "ops.db"),
        [Registration],
        users=lambda uid: EmbeddedRemote(tmp_path / f"{uid}.db"),
    )
    request = IngestRequest("b", "bundles/d/b.ndjson.gz", "0" * 64, 1, 1, "registrations", "d")
    result = ingestor.submit(IngestRequest(**{**request.to_json(), "scope": C1}), Caller("d", "u"))
    assert (result.state, result.reason) == (
        "rejected",
        "this service takes no bundles into scopes",
    )
    assert not (tmp_path / "u.db").exists()


def test_bundles_for_and_bundles_together_are_refused(tmp_path):
    blobs = DirectoryBlobStore(tmp_path / "b")
    bundles = Bundles(blobs, HttpIngest("http://127.0.0.1:9/ingest"), [Registration])
    with pytest.raises(ConfigurationError, match="bundles_for or bundles, not both"):
        ScopedReplicator(
            tmp_path / "d",
            MODELS,
            SCOPES,
            uid="u",
            directory=None,  # type: ignore[arg-type]
            remote_for=lambda root, owned: None,  # type: ignore[arg-type,return-value]
            bundles_for=lambda m: bundles,
            bundles=bundles,
        )


def test_a_queued_request_naming_a_scope_is_rejected(tmp_path):
    """Through a user's queue the rules prove the user, not the scope: a request naming
    one is not ingested into the user's root."""
    root = EmbeddedRemote(tmp_path / "u.db")
    ingestor = Ingestor(
        DirectoryBlobStore(tmp_path / "bucket"), root, [Registration], users=lambda uid: root
    )
    plain = IngestRequest("b", "bundles/d/b.ndjson.gz", "0" * 64, 1, 1, "registrations", "d")
    device = DeviceRecord(installation_id="d", name="d", platform="test")
    root.register(device)
    StoreIngest(root).submit(IngestRequest(**{**plain.to_json(), "scope": C1}), device)
    (result,) = ingestor.for_user("u").poll()
    assert (result.state, result.reason) == (
        "rejected",
        "a request naming a scope is taken over HTTP only",
    )


def test_a_service_of_scopes_only_refuses_a_request_naming_none(tmp_path):
    top = EmbeddedRemote(tmp_path / "top.db")
    roots = ScopeRoots(SCOPES, top, lambda scope: EmbeddedRemote(tmp_path / f"{scope}.db"))
    ingestor = Ingestor(DirectoryBlobStore(tmp_path / "bucket"), top, [Registration], scopes=roots)
    request = IngestRequest("b", "bundles/d/b.ndjson.gz", "0" * 64, 1, 1, "registrations", "d")
    for caller in (Caller("d", "u"), Caller("d"), None):
        result = ingestor.submit(request, caller)
        assert (result.state, result.reason) == (
            "rejected",
            "this service takes bundles into scopes only: name one",
        )
    assert top.all_docs("ingest_requests") == {}
