"""A scope's snapshot keys (``replicator.scopes.keys``) under the rules ``replicator
rules --scopes`` compiles, as signed-in users on the Firestore emulator behind the
TokenGate: who reads the generations, who adds one, that nobody changes one, that a
removal rotates the key in the same batch; then end to end, a collector removed from a
campaign opens its snapshots up to her removal and none after it."""

from __future__ import annotations

import base64
import datetime as _dt
import io
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import firestore

from replicator.errors import (
    AccessDeniedError,
    ConfigurationError,
    SnapshotNotFoundError,
    WrongKeyError,
)
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.keys import (
    ScopeKeyRing,
    generation_id,
    read_generations,
    remove_member,
    rotate,
)
from replicator.scopes.members import member_document
from replicator.snapshots.crypto import decrypt_stream
from replicator.snapshots.fetch import open_latest
from replicator.snapshots.manifest import read_manifest
from replicator.stores.directory import DirectoryBlobStore
from tests.scope_models import MODELS, SCOPES, Registration

C1 = "campaign-1"
CREW = {"col-a": "collector", "col-b": "collector", "sup": "supervisor", "adm": "admin"}


@pytest.fixture
def users(as_scope_users):
    users = as_scope_users(MODELS, SCOPES)
    server = users.service_client()
    server.document(f"scopes/{C1}").set({"kind": "campaign"})
    for uid, role in CREW.items():
        server.document(f"scopes/{C1}/members/{uid}").set(member_document(uid, "campaign", role))
    assert rotate(server, C1) == 1  # the first generation, made with the scope
    return users


def key_doc(uid: str, **changes: Any) -> dict[str, Any]:
    doc = {
        "key": base64.b64encode(bytes(32)).decode(),
        "createdBy": uid,
        "changedAt": firestore.SERVER_TIMESTAMP,
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def test_members_read_the_ring_and_nobody_else(users):
    for uid in CREW:
        assert ScopeKeyRing(users.client(uid), C1).ring().generations == (1,)
    assert users.client("col-a").document(f"scopes/{C1}/keys/{generation_id(1)}").get().exists
    with pytest.raises(AccessDeniedError, match="security rules refused"):
        read_generations(users.client("out"), C1)
    with pytest.raises(gexc.PermissionDenied):
        users.client("out").document(f"scopes/{C1}/keys/{generation_id(1)}").get()


def test_a_removed_member_reads_the_keys_no_more_and_the_removal_rotated(users):
    ring = ScopeKeyRing(users.client("col-b"), C1)
    assert ring.ring().generations == (1,)
    assert remove_member(users.client("adm"), C1, "col-b") == 2
    with pytest.raises(AccessDeniedError):
        ring.ring()
    assert ring.held().generations == (1,)  # what she read before stays hers
    assert not users.service_client().document(f"scopes/{C1}/members/col-b").get().exists
    made = users.client("adm").document(f"scopes/{C1}/keys/{generation_id(2)}").get()
    assert made.get("createdBy") == "adm"
    assert ScopeKeyRing(users.client("col-a"), C1).ring().generations == (1, 2)
    assert sorted(read_generations(users.client("col-a"), C1, after=1)) == [2]  # newer only


@pytest.mark.parametrize("uid", ["col-a", "sup", "out"])
def test_only_an_admin_adds_a_generation(users, uid):
    with pytest.raises(AccessDeniedError):
        rotate(users.client(uid), C1)
    assert rotate(users.client("adm"), C1) == 2


@pytest.mark.parametrize(
    "remover, removed",
    [("col-a", "col-b"), ("adm", "adm"), ("col-b", "col-b")],
    ids=["a collector removes another", "the admin removes herself", "a member leaves"],
)
def test_a_removal_the_rules_refuse_rotates_nothing(users, remover, removed):
    with pytest.raises(AccessDeniedError):
        remove_member(users.client(remover), C1, removed)
    server = users.service_client()
    assert server.document(f"scopes/{C1}/members/{removed}").get().exists
    assert sorted(read_generations(server, C1)) == [1]


@pytest.mark.parametrize(
    "doc_id, changes",
    [
        ("0000000002", {"createdBy": "col-a"}),
        ("0000000002", {"changedAt": _dt.datetime(2020, 1, 1, tzinfo=_dt.timezone.utc)}),
        ("0000000002", {"extra": 1}),
        ("0000000002", {"createdBy": None}),
        ("0000000002", {"changedAt": None}),
        ("0000000002", {"key": None}),
        ("0000000002", {"key": base64.b64encode(bytes(31)).decode()}),
        ("0000000002", {"key": "!" * 43 + "="}),
        ("0000000002", {"key": 12345}),
        ("2", {}),
        ("000000000x", {}),
    ],
    ids=[
        "another creator",
        "a time not the request's",
        "a field more",
        "no creator",
        "no time",
        "no key",
        "a short key",
        "a key not base64",
        "a key not a string",
        "an id not padded",
        "an id not a number",
    ],
)
def test_an_admins_generation_must_be_well_formed(users, doc_id, changes):
    ref = users.client("adm").document(f"scopes/{C1}/keys/{doc_id}")
    with pytest.raises(gexc.PermissionDenied):
        ref.create(key_doc("adm", **changes))
    ref.parent.document(generation_id(2)).create(key_doc("adm"))  # the same, well formed


@pytest.mark.parametrize("uid", ["adm", "col-a"])
def test_nobody_changes_or_deletes_a_generation(users, uid):
    ref = users.client(uid).document(f"scopes/{C1}/keys/{generation_id(1)}")
    with pytest.raises(gexc.PermissionDenied):
        ref.set(key_doc(uid))
    with pytest.raises(gexc.PermissionDenied):
        ref.update({"createdBy": uid})
    with pytest.raises(gexc.PermissionDenied):
        ref.delete()
    assert users.service_client().document(ref.path).get().get("createdBy") == "server"


@pytest.mark.parametrize("scope, uid", [("../x", "col-b"), (C1, "a/b"), (C1, ""), ("", "x")])
def test_a_malformed_scope_or_uid_is_refused_before_anything_is_written(users, scope, uid):
    with pytest.raises(ConfigurationError):
        remove_member(users.client("adm"), scope, uid)
    assert sorted(read_generations(users.service_client(), C1)) == [1]


def test_a_scope_with_no_key_yet_is_told(users):
    server = users.service_client()
    server.document("scopes/campaign-2").set({"kind": "campaign"})
    server.document("scopes/campaign-2/members/col-a").set(
        member_document("col-a", "campaign", "collector")
    )
    with pytest.raises(SnapshotNotFoundError, match="no snapshot key yet"):
        ScopeKeyRing(users.client("col-a"), "campaign-2").ring()


# -- end to end ------------------------------------------------------------------------


class Campaign:
    """Devices of the campaign's members, each scope's snapshots in a directory, each
    device's key the live ring of the scope read as its user."""

    def __init__(self, users: Any, tmp: Path) -> None:
        self.users, self.tmp = users, tmp
        self.rings: dict[str, ScopeKeyRing] = {}
        self.blobs = DirectoryBlobStore(tmp / "blobs" / C1)

    def ring(self, uid: str, scope: str) -> ScopeKeyRing:
        ring = self.rings[uid] = ScopeKeyRing(self.users.client(uid), scope)
        return ring

    def device(self, uid: str) -> ScopedReplicator:
        return ScopedReplicator(
            self.tmp / uid,
            MODELS,
            SCOPES,
            uid=uid,
            directory=self.users.remote(uid),
            remote_for=lambda root, owned: self.users.remote(uid, root=root, owned=owned),
            blobs_for=lambda m: DirectoryBlobStore(self.tmp / "blobs" / m.scope),
            key_for=lambda m: self.ring(uid, m.scope),
            device_name=uid,
        )

    def write(self, device: ScopedReplicator, uid: str, head: str) -> str | None:
        with device.scope(C1).bound():
            Registration.create(head=head, collector=uid)
        report = device.sync()
        assert not report.failed, report.failed
        return report.reports[C1].snapshot

    def opened(self, ring: Any, snapshot_id: str) -> bytes:
        sealed, out = io.BytesIO(), io.BytesIO()
        self.blobs.get(f"snapshots/{snapshot_id}.snap", sealed)
        sealed.seek(0)
        decrypt_stream(sealed, out, ring)
        return out.getvalue()


def test_a_removed_collector_opens_no_snapshot_published_after_her_removal(users, tmp_path):
    campaign = Campaign(users, tmp_path)
    col_a, col_b = campaign.device("col-a"), campaign.device("col-b")
    for device in (col_a, col_b):
        assert not device.sync().failed
    first = campaign.write(col_a, "col-a", "registered before the removal")
    assert first is not None
    keys = read_generations(users.service_client(), C1)
    assert read_manifest(campaign.blobs, keys[1]).snapshot_id == first  # generation 1's
    assert not col_b.sync().failed
    her_ring = campaign.rings["col-b"]
    assert her_ring.held().generations == (1,)

    assert remove_member(users.client("adm"), C1, "col-b") == 2
    queries = campaign.rings["col-a"].queries
    second = campaign.write(col_a, "col-a", "registered after the removal")
    assert campaign.rings["col-a"].queries == queries + 1  # one read of the ring per sync
    assert second is not None and second != first
    keys = read_generations(users.service_client(), C1)
    assert read_manifest(campaign.blobs, keys[2]).snapshot_id == second  # generation 2's

    kept = her_ring.held()  # the ring as she last read it
    assert campaign.opened(kept, first)  # what she could read stays readable
    with pytest.raises(WrongKeyError, match="does not hold"):
        campaign.opened(kept, second)
    with pytest.raises(WrongKeyError, match="does not hold"):
        open_latest(campaign.blobs, kept)  # a restore stops at the manifest already
    with pytest.raises(AccessDeniedError):
        her_ring.ring()  # and she can read the keys no more
    lost = col_b.sync()
    assert [c.scope for c in lost.removed] == [C1]

    server = users.service_client()
    server.document(f"scopes/{C1}/members/col-d").set(
        member_document("col-d", "campaign", "collector")
    )
    newcomer = campaign.device("col-d")
    joined = newcomer.sync()
    assert not joined.failed, joined.failed
    (added,) = joined.added
    assert added.restored == second  # through the live ring, generation 2
    with newcomer.scope(C1).bound():
        heads = sorted(r.head for r in Registration.select())
    assert heads == ["registered after the removal", "registered before the removal"]
    assert campaign.rings["col-d"].held().generations == (1, 2)
