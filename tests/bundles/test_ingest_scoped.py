"""The ingest service in a scope enforces the same declaration the Firestore rules are
compiled from: a collector's registrations land, in her own name only; another
collector cannot overwrite them, a supervisor can; a non-member's bundle is rejected
whole. Over HTTP (uvicorn) with signed-in callers, into the campaign's root
``scopes/campaign-1`` on the Firestore emulator (the service holds admin credentials,
so only its own checks stand between a bundle and the scope)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from replicator import DirectoryBlobStore, Ingestor, IngestRequest
from replicator.auth.verify import IdTokenVerifier
from replicator.bundles.auth import DEVICE_HEADER, SignedInCallers
from replicator.bundles.scoped import ScopeAccess
from replicator.errors import ConfigurationError
from replicator.testing import mock_id_token
from tests.bundles.kit import WHEN, put_registrations
from tests.helpers import FIRESTORE_PROJECT
from tests.scope_models import SCOPES, Registration

ROOT = "scopes/campaign-1"
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


class Service:
    def __init__(self, tmp_path: Path, client: Any) -> None:
        from replicator.stores.firestore import FirestoreRemote

        self.client = client
        self.bucket = DirectoryBlobStore(tmp_path / "bucket")
        self.root = FirestoreRemote(client, root=ROOT, timeout=10.0)
        self.ingestor = Ingestor(
            self.bucket,
            self.root,
            [Registration],
            users=lambda uid: self.root,
            scope=ScopeAccess(SCOPES, "campaign"),
        )
        verifier = IdTokenVerifier(FIRESTORE_PROJECT, emulator=True)
        self.server = self.ingestor.serve(auth=SignedInCallers(verifier))

    def request(self, uid: str, rows: list[dict[str, Any]], folder: str) -> IngestRequest:
        """A bundle of ``rows`` from ``uid``'s phone, put under ``folder``; its request."""
        return put_registrations(self.bucket, folder, f"{uid}-phone", rows)

    def send(self, uid: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Post a bundle of ``uid``'s over HTTP, signed in as ``uid``; the answer."""
        request = self.request(uid, rows, f"users/{uid}/")
        device = request.device
        headers = {
            "Authorization": f"Bearer {mock_id_token(uid, FIRESTORE_PROJECT)}",
            DEVICE_HEADER: device,
        }
        answer = httpx.post(self.server.url, json=request.to_json(), headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def stored(self) -> dict[str, dict[str, Any]]:
        return {d.id: dict(d.data) for d in self.root.pull("registrations", None, 100).docs}


def _refused(result: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in result["refused"]}


@pytest.fixture
def service(tmp_path: Path, firestore_client: Any) -> Any:
    firestore_client.document(ROOT).set({"kind": "campaign"})
    for uid, role in {"col-a": "collector", "col-b": "collector", "sup": "supervisor"}.items():
        firestore_client.document(f"{ROOT}/members/{uid}").set({"role": role})
    made = Service(tmp_path, firestore_client)
    yield made
    made.server.close()


def test_a_collectors_bundle_lands_in_her_name_only(service):
    mine, theirs = _row(1, "col-a"), _row(2, "col-b")
    result = service.send("col-a", [mine, theirs])
    assert result["state"] == "accepted" and result["accepted"] == 1
    assert _refused(result) == {theirs["id"]: "collector must be the creating user's uid (col-a)"}
    assert set(service.stored()) == {mine["id"]}


def test_another_collector_cannot_overwrite_a_row_and_a_supervisor_can(service):
    row = _row(3, "col-a")
    assert service.send("col-a", [row])["accepted"] == 1
    other = service.send("col-b", [{**row, "head": "mine now", "updatedOn": LATER}])
    assert _refused(other) == {row["id"]: "a collector may not update registrations rows of others"}
    assert service.stored()[row["id"]]["head"] == "head 3"
    sup = service.send("sup", [{**row, "members": 9, "updatedOn": LATER}])
    assert sup["accepted"] == 1 and _refused(sup) == {}
    assert service.stored()[row["id"]]["members"] == 9
    new = service.send("sup", [_row(4, "sup")])  # supervisors do not create
    assert _refused(new) == {_row(4, "sup")["id"]: "a supervisor may not create registrations rows"}


def test_a_non_members_bundle_is_rejected_whole(service):
    result = service.send("outsider", [_row(5, "outsider")])
    assert result["state"] == "rejected"
    assert result["reason"] == "user outsider is not a member of this campaign"
    assert service.stored() == {}


def test_a_scope_kind_the_declaration_lacks_is_refused():
    with pytest.raises(ConfigurationError, match="no scope kind 'campain'"):
        ScopeAccess(SCOPES, "campain")


def test_a_bundle_from_a_caller_who_is_not_a_signed_in_user_is_rejected(service):
    request = service.request("col-a", [_row(6, "col-a")], "")
    result = service.ingestor.submit(request)  # no caller: an operator's device token
    assert result.state == "rejected"
    assert result.reason == "bundles into a scope come from its signed-in members only"
    assert service.stored() == {}
