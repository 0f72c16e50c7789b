"""A scope's members reach the scope's folder (``scopes/{scopeId}/``) through storage
grants, and nobody else does: SeaweedFS behind the grant service under uvicorn
(``granted_storage``), the membership read from the Firestore emulator by the service's
admin client (``FirestoreMembers``), devices signed in under the scopes' rules with ID
tokens only (``ScopedReplicator`` with ``blobs_for=GrantedBlobStore(..., scope=...)``)."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from typing import Any

import httpx
import peewee
import pytest

from replicator import AccessDeniedError, ConfigurationError, Replicator, TransientError
from replicator.grants import Refused, Signer
from replicator.grants.members import FirestoreMembers
from replicator.scopes.device import ScopedReplicator
from replicator.scopes.members import member_document, valid_scope_id
from replicator.snapshots.crypto import Passphrase
from replicator.stores.firestore import FirestoreRemote
from replicator.stores.grant_ops import BadOp, Op
from replicator.stores.granted import GrantedBlobStore
from tests.scope_models import MODELS, SCOPES, Form, Registration

A, B = "campaign-a", "campaign-b"


class ScopeWorld:
    """A project under the scopes' rules, its membership read by a grant service that
    grants scopes' folders (``members`` cached ``cache_seconds``)."""

    def __init__(self, storage: Any, users: Any, tmp: Any, **signer: Any) -> None:
        self.storage, self.users, self.tmp = storage, users, tmp
        tag = os.urandom(4).hex()  # the bucket is the session's: fresh folders per test
        self.a, self.b = f"{A}-{tag}", f"{B}-{tag}"
        self.admin = users.service_client()
        self.members = FirestoreMembers(self.admin, cache_seconds=signer.pop("cache", 0))
        self.signer = Signer(storage.service_client, storage.bucket, members=self.members, **signer)
        self.server = storage.serve(self.signer, project=users.project)
        self.url = self.server.base_url

    def add(self, scope: str, uid: str, role: str = "collector") -> None:
        self.admin.document(f"scopes/{scope}").set({"kind": "campaign"})
        self.admin.document(f"scopes/{scope}/members/{uid}").set(
            member_document(uid, "campaign", role)
        )

    def remove(self, scope: str, uid: str) -> None:
        self.admin.document(f"scopes/{scope}/members/{uid}").delete()

    def store(self, uid: str, scope: str) -> GrantedBlobStore:
        return GrantedBlobStore(self.url, self.users.tokens(uid), scope=scope)

    def bucket(self, folder: str = "") -> dict[str, bytes]:
        """Every object under ``folder`` and its bytes, as admin sees them."""
        client = self.storage.seaweed.client()
        out = {}
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.storage.bucket, Prefix=folder
        )
        for page in pages:
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.storage.bucket, Key=item["Key"])["Body"]
                out[item["Key"]] = body.read()
        return out

    def sign(self, uid: str, ops: list[dict[str, Any]]) -> httpx.Response:
        token = self.users.tokens(uid).id_token()
        return httpx.post(
            f"{self.url}/storage/sign",
            content=json.dumps({"ops": ops}),
            headers={"Authorization": f"Bearer {token}"},
        )

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def scopes(granted_storage, as_scope_users, tmp_path):
    world = ScopeWorld(granted_storage, as_scope_users(MODELS, SCOPES), tmp_path)
    yield world
    world.close()


def _device(world: ScopeWorld, uid: str) -> ScopedReplicator:
    return ScopedReplicator(
        world.tmp / uid,
        MODELS,
        SCOPES,
        uid=uid,
        directory=world.users.remote(uid),
        remote_for=lambda root, owned: world.users.remote(uid, root=root, owned=owned),
        blobs_for=lambda m: GrantedBlobStore(world.url, world.users.tokens(uid), scope=m.scope),
        key_for=lambda m: Passphrase(f"the key of {m.scope}"),
        device_name=uid,
    )


def _rows(device: ScopedReplicator, scope: str) -> list[str]:
    with device.scope(scope).bound():
        return sorted(r.head for r in Registration.select())


def test_a_member_publishes_and_another_restores_through_grants(scopes):
    for uid in ("col-a", "col-b"):
        scopes.add(scopes.a, uid)
    db = peewee.SqliteDatabase(str(scopes.tmp / "server.db"))
    server = Replicator(db, [Form], FirestoreRemote(scopes.admin, f"scopes/{scopes.a}"))
    with server.bound():
        Form.create(name="household")
    server.sync()
    phones = {uid: _device(scopes, uid) for uid in ("col-a", "col-b")}
    for uid, phone in phones.items():
        assert not phone.sync().failed
        with phone.scope(scopes.a).bound():
            Registration.create(head=f"{uid}'s household", collector=uid)
    for _ in range(2):
        for phone in phones.values():
            report = phone.sync()
            assert not report.failed, report.failed
            assert report.reports[scopes.a].snapshot_error is None, report.reports[
                scopes.a
            ].snapshot_error
    stored = scopes.bucket(f"scopes/{scopes.a}/")
    assert f"scopes/{scopes.a}/snapshots/manifest.json" in stored, sorted(stored)
    assert any(key.endswith(".snap") for key in stored)
    for uid in phones:  # (the bucket is shared with the other grants tests)
        mine = scopes.bucket(f"users/{uid}/")
        assert not mine, f"a scope's snapshot landed in {uid}'s folder: {sorted(mine)}"

    scopes.add(scopes.a, "col-d")
    newcomer = _device(scopes, "col-d")
    joined = newcomer.sync()
    assert not joined.failed, joined.failed
    (added,) = joined.added
    assert added.scope == scopes.a and added.restored is not None  # from the snapshot, granted
    assert (
        _rows(newcomer, scopes.a)
        == _rows(phones["col-a"], scopes.a)
        == ["col-a's household", "col-b's household"]
    )


def test_a_non_member_and_a_removed_member_are_refused(scopes, caplog):
    scopes.add(scopes.a, "col-a")
    scopes.add(scopes.a, "col-b")
    scopes.store("col-a", scopes.a).put("snapshots/x.snap", io.BytesIO(b"the campaign's"))
    outsider, removed = scopes.store("out", scopes.a), scopes.store("col-b", scopes.a)
    assert [i.key for i in removed.list("snapshots/")] == ["snapshots/x.snap"]
    scopes.remove(scopes.a, "col-b")
    caplog.set_level(logging.INFO, "replicator.grants")
    for store, uid in ((outsider, "out"), (removed, "col-b")):
        for attempt in (
            lambda s: s.get("snapshots/x.snap", io.BytesIO()),
            lambda s: s.put("snapshots/mine.snap", io.BytesIO(b"x"), if_none_match=True),
            lambda s: s.list(""),
            lambda s: s.delete("snapshots/x.snap"),
        ):
            with pytest.raises(AccessDeniedError, match=f"not a member of the scope '{scopes.a}'"):
                attempt(store)
        logged = [
            r.getMessage() for r in caplog.records if f"refused a grant to {uid}" in r.getMessage()
        ]
        assert logged and all(
            f"HTTP 403: not a member of the scope '{scopes.a}'" in m for m in logged
        )
    assert scopes.bucket(f"scopes/{scopes.a}/") == {
        f"scopes/{scopes.a}/snapshots/x.snap": b"the campaign's"
    }


def test_a_member_of_one_scope_never_reaches_another(scopes):
    scopes.add(scopes.a, "col-a")
    scopes.add(scopes.b, "col-b")
    scopes.store("col-b", scopes.b).put("secret", io.BytesIO(b"B's"))
    mine = scopes.store("col-a", scopes.a)
    before = scopes.bucket(f"scopes/{scopes.b}/")
    for key in (
        f"../{scopes.b}/secret",
        f"a/../../{scopes.b}/secret",
        f"/{scopes.b}/secret",
        f"..\\{scopes.b}\\secret",
    ):
        with pytest.raises(ConfigurationError):
            mine.get(key, io.BytesIO())
        answer = scopes.sign("col-a", [{"op": "get", "key": key, "scope": scopes.a}])
        assert answer.status_code == 400, (key, answer.text)
    literal = [
        f"..%2f{scopes.b}/secret",
        f"%2e%2e/{scopes.b}/secret",
        f"scopes/{scopes.b}/secret",
        scopes.b,
        f"{scopes.b}/secret",
    ]
    for key in literal:  # stays inside A's folder, named as it is
        mine.put(key, io.BytesIO(b"A's"))
    assert sorted(scopes.bucket(f"scopes/{scopes.a}/")) == sorted(
        f"scopes/{scopes.a}/{k}" for k in literal
    )
    tricks = [
        scopes.b,  # a member of scopes.a only
        f"{scopes.a}/../{scopes.b}",
        f"{scopes.a}%2F..%2F{scopes.b}",
        f"{scopes.a}/{scopes.b}",
        "..",
        f"{scopes.b}\n",
        f"{scopes.b}\u200b",
        "",
        ["x"],
    ]
    for scope in tricks:
        answer = scopes.sign("col-a", [{"op": "get", "key": "secret", "scope": scope}])
        assert answer.status_code == (403 if scope == scopes.b else 400), (scope, answer.text)
    both = {"op": "get", "key": "secret", "scope": scopes.a, "space": "reference"}
    assert scopes.sign("col-a", [both]).status_code == 400
    (get,) = mine.sign([Op("get", "secret", scope=scopes.a)])
    tampered = get.url.replace(f"scopes/{scopes.a}/secret", f"scopes/{scopes.b}/secret")
    assert tampered != get.url
    answer = httpx.get(tampered)
    assert answer.status_code == 403 and b"SignatureDoesNotMatch" in answer.content
    (listing,) = mine.sign([Op("list", "", scope=scopes.a)])
    assert (
        httpx.get(listing.url.replace(f"%2F{scopes.a}%2F", f"%2F{scopes.b}%2F")).status_code == 403
    )
    assert mine.head("secret") is None  # A's own folder: B's secret is not there
    assert scopes.bucket(f"scopes/{scopes.b}/") == before


def test_readers_only_read_when_write_roles_are_given(granted_storage, as_scope_users, tmp_path):
    world = ScopeWorld(
        granted_storage, as_scope_users(MODELS, SCOPES), tmp_path, write_roles={"collector"}
    )
    try:
        world.add(world.a, "col-a")
        world.add(world.a, "sup", "supervisor")
        world.store("col-a", world.a).put("snapshots/x.snap", io.BytesIO(b"x"))
        reader = world.store("sup", world.a)
        out = io.BytesIO()
        reader.get("snapshots/x.snap", out)
        assert out.getvalue() == b"x"
        with pytest.raises(AccessDeniedError, match="'supervisor' only reads"):
            reader.put("snapshots/y.snap", io.BytesIO(b"y"))
        with pytest.raises(AccessDeniedError, match="'supervisor' only reads"):
            reader.delete("snapshots/x.snap")
    finally:
        world.close()


def test_the_membership_is_cached_for_at_most_its_time(granted_storage, as_scope_users, tmp_path):
    world = ScopeWorld(granted_storage, as_scope_users(MODELS, SCOPES), tmp_path, cache=30)
    try:
        world.add(world.a, "col-a")
        store = world.store("col-a", world.a)
        for n in range(3):
            store.put(f"k{n}", io.BytesIO(b"x"))
        assert world.members.reads == 1
        world.remove(world.a, "col-a")
        store.put("k3", io.BytesIO(b"x"))  # within the cache time: still a member
        world.members.forget()
        with pytest.raises(AccessDeniedError):
            store.put("k4", io.BytesIO(b"x"))
    finally:
        world.close()


def test_a_member_document_must_be_the_users_own(scopes):
    scopes.admin.document(f"scopes/{scopes.a}/members/col-a").set({"role": "collector"})  # no uid
    scopes.admin.document(f"scopes/{scopes.a}/members/col-b").set(
        member_document("col-a", "c", "x")
    )
    scopes.admin.document(f"scopes/{scopes.a}/members/col-c").set(member_document("col-c", "c", ""))
    for uid in ("col-a", "col-b", "col-c", "nobody"):
        assert scopes.members(uid, scopes.a) is None, uid
    assert scopes.members("col-a", "a/b") is None


def test_a_membership_out_of_reach_is_a_transient_refusal(granted_storage, monkeypatch):
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")  # nothing listens there
    members = FirestoreMembers(firestore.Client(project="demo-nowhere"), timeout=1.0)
    signer = Signer(granted_storage.service_client, granted_storage.bucket, members=members)
    with granted_storage.serve(signer) as server:
        store = GrantedBlobStore(server.base_url, granted_storage.tokens("u1"), scope=A)
        start = time.monotonic()
        with pytest.raises(TransientError, match="HTTP 503: cannot sign now: cannot read"):
            store.head("snapshots/manifest.json")
        assert time.monotonic() - start < 10  # the read's retries are bounded
        own = GrantedBlobStore(server.base_url, granted_storage.tokens("u1"))
        assert own.head("nothing") is None  # a user's own folder needs no membership


# -- the wire format and the signer's checks, without servers ------------------------


def test_an_op_names_its_scope_and_old_ops_are_unchanged():
    op = Op("put", "snapshots/1.snap", sha256="0" * 64, if_none_match=True, scope=A)
    assert op.to_json()["scope"] == A and Op.from_json(op.to_json()) == op
    old = {"op": "get", "key": "manifest.json"}
    assert Op("get", "manifest.json").to_json() == old and Op.from_json(old).scope is None
    for bad in ("", "a/b", "..", ".", "x\n", 7, "x" * 129):
        with pytest.raises(BadOp):
            Op.from_json({"op": "get", "key": "k", "scope": bad})
    with pytest.raises(BadOp, match="not both"):
        Op.from_json({"op": "get", "key": "k", "scope": A, "space": "reference"})


def test_the_device_refuses_a_scope_that_cannot_be_one():
    for bad in ("a/b", "..", "", "x\ny"):
        with pytest.raises(ConfigurationError):
            GrantedBlobStore("http://127.0.0.1:1", None, scope=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        GrantedBlobStore("http://127.0.0.1:1", None, scope=A, space="reference")  # type: ignore[arg-type]


def test_scope_ids_are_checked_whole():
    assert valid_scope_id(A) and not valid_scope_id(f"{A}\n") and not valid_scope_id("a..b")


class _Client:
    """Enough of a boto3 client for the signer's checks (no request is signed)."""

    def generate_presigned_url(self, method: str, Params: Any, **kw: Any) -> str:
        names = ["host"]
        if "IfNoneMatch" in Params:
            names += ["if-none-match", "x-amz-checksum-sha256", "x-amz-meta-sha256"]
        return f"http://s3/b/k?X-Amz-SignedHeaders={';'.join(names)}"


def test_the_signer_refuses_scopes_it_cannot_grant():
    calls: list[tuple[str, str]] = []

    def members(uid: str, scope: str) -> str | None:
        calls.append((uid, scope))
        return "collector" if scope == A else None

    plain = Signer(_Client(), "b")
    with pytest.raises(BadOp, match="grants no scopes"):
        plain.sign("u", [Op("get", "k", scope=A)])
    with pytest.raises(ConfigurationError, match="overlaps"):
        Signer(_Client(), "b", members=members, scopes="users")
    with pytest.raises(ConfigurationError, match="overlaps"):
        Signer(_Client(), "b", members=members, scopes="users/x")
    signer = Signer(_Client(), "b", members=members)
    assert signer.base("u", Op("get", "k", scope=A), {A: "collector"}) == f"scopes/{A}/"
    for uid in ("..", "a/b", ""):
        with pytest.raises(Exception, match="cannot name a folder"):
            signer.sign(uid, [Op("get", "k", scope=A)])
    with pytest.raises(BadOp, match="not a scope id"):
        signer.sign("u", [Op("get", "k", scope="a.b..c")])
    many = [Op("get", "k", scope=f"s{n}") for n in range(11)]
    with pytest.raises(BadOp, match="at most 10 scopes"):
        signer.sign("u", many)
    assert calls == []
    with pytest.raises(Refused, match="not a member of the scope 's0'"):
        signer.sign("u", many[:10])
    assert len(calls) == 10
    calls.clear()
    signer.sign("u", [Op("get", "k", scope=A), Op("head", "k", scope=A)])
    assert calls == [("u", A)]  # one lookup per scope per request
