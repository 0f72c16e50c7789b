"""The ingest service knows who is calling: devices of signed-in users send the user's
Firebase ID token and their installation id on every request; the service (under
uvicorn) verifies the token, takes bundles only from that user's folder of the bucket
(``users/<uid>/``) and writes rows only into that user's root of the remote store,
stamping the writer itself. Attacked as a user holding a valid token does; run on the
embedded remote and on the Firestore emulator (one root per user)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import peewee
import pytest

from replicator import (
    AuthError,
    Bundles,
    DirectoryBlobStore,
    EmbeddedRemote,
    HttpIngest,
    Ingestor,
    IngestRequest,
    Replicator,
    StoreIngest,
)
from replicator.auth.verify import IdTokenVerifier
from replicator.bundles.auth import DEVICE_HEADER, SignedInCallers
from replicator.stores.base import DeviceRecord
from replicator.testing import MockIdTokens, mock_id_token
from tests.bundles.kit import bundle_bytes, row
from tests.campaign_models import Household
from tests.helpers import FIRESTORE_PROJECT

PROJECT = FIRESTORE_PROJECT


class Campaign:
    """A bucket, one root of the remote store per user, and the ingest service on them."""

    def __init__(self, tmp_path: Path, roots: Any, verifier: IdTokenVerifier | None = None):
        self.tmp_path = tmp_path
        self.bucket = DirectoryBlobStore(tmp_path / "bucket")
        self.roots: dict[str, Any] = {}
        self.made: list[str] = []

        def root(uid: str) -> Any:
            self.made.append(uid)
            return self.root(uid)

        self._make_root = roots
        self.ingestor = Ingestor(
            self.bucket, EmbeddedRemote(tmp_path / "operators.db"), [Household], users=root
        )
        verifier = verifier or IdTokenVerifier(PROJECT, emulator=True)
        self.server = self.ingestor.serve(auth=SignedInCallers(verifier))

    def root(self, uid: str) -> Any:
        if uid not in self.roots:
            self.roots[uid] = self._make_root(uid)
        return self.roots[uid]

    def stored(self, uid: str) -> dict[str, dict[str, Any]]:
        page = self.root(uid).pull("households", None, 1000)
        return {d.id: dict(d.data) for d in page.docs}

    def put(self, uid: str, data: bytes, key: str) -> None:
        """Put bytes in ``uid``'s folder of the bucket (what a grant lets a device do)."""
        self.bucket.put(f"users/{uid}/{key}", io.BytesIO(data))

    def request(self, uid: str, device: str, rows: list[Any], **over: Any) -> IngestRequest:
        """A bundle of ``rows`` from ``device``, put in ``uid``'s folder; its request."""
        bundle = f"b-{time.time_ns()}"
        data = bundle_bytes(rows, bundle=bundle, device=device)
        key = over.pop("key", f"bundles/{device}/{bundle}.ndjson.gz")
        self.put(uid, data, key)
        import hashlib

        fields = {
            "bundle": bundle,
            "key": key,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "count": len(rows),
            "collection": "households",
            "device": device,
            **over,
        }
        return IngestRequest(**fields)

    def post(self, request: IngestRequest, token: str | None, device: str | None) -> Any:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if device is not None:
            headers[DEVICE_HEADER] = device
        return httpx.post(self.server.url, json=request.to_json(), headers=headers, timeout=30)

    def device(self, name: str, tokens: Any) -> Replicator:
        db = peewee.SqliteDatabase(str(self.tmp_path / f"{name}.db"))
        mine = DirectoryBlobStore(self.tmp_path / "bucket" / "users" / tokens.uid)
        service = HttpIngest(self.server.url, tokens=tokens)
        return Replicator(
            db,
            [Household],
            self.root(tokens.uid),
            device_name=name,
            bundles=Bundles(mine, service, [Household]),
        )

    def close(self) -> None:
        self.server.close()


@pytest.fixture(params=["embedded", "firestore"])
def campaign(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "embedded":

        def roots(uid: str) -> Any:
            return EmbeddedRemote(tmp_path / "roots" / f"{uid}.db")
    else:
        from replicator.stores.firestore import FirestoreRemote

        client = request.getfixturevalue("firestore_client")

        def roots(uid: str) -> Any:
            return FirestoreRemote(client, root=f"users/{uid}", timeout=10.0)

    (tmp_path / "roots").mkdir()
    made = Campaign(tmp_path, roots)
    yield made
    made.close()


def token(uid: str, **kw: Any) -> str:
    return mock_id_token(uid, PROJECT, **kw)


# -- two users end to end ------------------------------------------------------------------


def test_each_users_rows_land_in_their_own_root_and_each_sees_only_their_own(campaign):
    alice, bob = MockIdTokens("alice", PROJECT), MockIdTokens("bob", PROJECT)
    phone, tablet = campaign.device("alice-phone", alice), campaign.device("bob-tablet", bob)
    with phone.bound():
        Household.create(head="Ana", members=3)
        Household.create(head="Alberto", members=2)
    with tablet.bound():
        Household.create(head="Bea", members=5)
    assert phone.sync().bundled == {"households": 2}
    assert tablet.sync().bundled == {"households": 1}
    alices, bobs = campaign.stored("alice"), campaign.stored("bob")
    assert sorted(d["head"] for d in alices.values()) == ["Alberto", "Ana"]
    assert sorted(d["head"] for d in bobs.values()) == ["Bea"]
    assert {d["updatedBy"] for d in alices.values()} == {phone.installation_id}
    assert {d["createdBy"] for d in bobs.values()} == {tablet.installation_id}
    # the bundles are in each user's own folder of the bucket, and nothing went elsewhere
    assert campaign.bucket.list("users/alice/bundles/") and campaign.bucket.list("users/bob/")
    assert not campaign.bucket.list("bundles/")
    assert campaign.ingestor.store.pull("households", None, 10).docs == []
    assert sorted(campaign.made) == ["alice", "bob"]  # one root each, kept for later requests


# -- who may call ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_token", "device", "says"),
    [
        (lambda: token("alice", lifetime=-120, issued_at=time.time() - 3600), "p", "expired"),
        (lambda: mock_id_token("alice", "another-project"), "p", "not one of project"),
        (lambda: None, "p", "no ID token"),
        (lambda: "owner", "p", "not an ID token"),
        (lambda: token("alice"), None, "no X-Replicator-Device header"),
        (lambda: token("alice"), "a/b", "no X-Replicator-Device header"),
    ],
    ids=["expired", "another-project", "no-token", "emulator-admin", "no-device", "bad-device"],
)
def test_a_caller_the_service_cannot_identify_is_refused_with_why(
    campaign, make_token, device, says
):
    request = campaign.request("alice", device or "p", [row(1)])
    answer = campaign.post(request, make_token(), device)
    assert answer.status_code == 401 and says in answer.json()["error"], answer.text
    assert campaign.stored("alice") == {}


def test_a_bundle_under_another_users_folder_is_rejected(campaign):
    # mallory's own bundle, put (somehow) in alice's folder, then named from mallory's
    theirs = campaign.request("alice", "m-phone", [row(1, head="planted")])
    for key in (f"users/alice/{theirs.key}", f"../../users/alice/{theirs.key}"):
        request = IngestRequest(**{**theirs.to_json(), "key": key, "bundle": f"x{len(key)}"})
        answer = campaign.post(request, token("mallory"), "m-phone")
        assert answer.status_code == 200 and answer.json()["state"] == "rejected"
        assert "of user mallory's folder users/mallory/" in answer.json()["reason"]
    assert campaign.stored("alice") == {} and campaign.stored("mallory") == {}


def test_a_device_holding_another_users_token_reaches_only_that_users_folder_and_root(campaign):
    alices = campaign.request("alice", "alice-phone", [row(1, head="Ana")])
    # bob's token, naming alice's device and alice's bundle: looked for in bob's folder only
    answer = campaign.post(alices, token("bob"), "alice-phone")
    assert answer.json()["state"] == "rejected" and "no bundle at" in answer.json()["reason"]
    assert campaign.stored("alice") == {} and campaign.stored("bob") == {}
    # alice's own request is then taken: the rejection was recorded in bob's root only
    answer = campaign.post(alices, token("alice"), "alice-phone")
    assert answer.json()["state"] == "accepted", answer.text
    assert [d["head"] for d in campaign.stored("alice").values()] == ["Ana"]


def test_a_request_naming_another_device_than_the_callers_is_403(campaign):
    request = campaign.request("alice", "alice-laptop", [row(1)])
    answer = campaign.post(request, token("alice"), "alice-phone")
    assert answer.status_code == 403 and "a device sends only its own" in answer.json()["error"]
    assert campaign.stored("alice") == {}


def test_rows_naming_another_creator_or_writer_are_stamped_or_refused(campaign):
    ana = row(1, head="Ana")
    assert campaign.post(campaign.request("bob", "bob-tablet", [ana]), token("bob"), "bob-tablet")
    forged = [
        row(1, head="alice's, same id as bob's row", updatedBy="bob-tablet"),
        row(2, createdBy="bob-tablet"),
    ]
    answer = campaign.post(
        campaign.request("alice", "alice-phone", forged), token("alice"), "alice-phone"
    ).json()
    assert answer["state"] == "accepted" and answer["accepted"] == 1, answer
    assert "unknown field 'createdBy'" in answer["refused"][0]["reason"]
    alices = campaign.stored("alice")
    assert list(alices) == [ana["id"]] and alices[ana["id"]]["updatedBy"] == "alice-phone"
    assert campaign.stored("bob")[ana["id"]]["head"] == "Ana"  # bob's root untouched
    # within alice's root, the per-device rule holds: her laptop cannot overwrite the phone's
    later = row(1, head="from the laptop", updatedOn="2026-12-01 00:00:00")
    answer = campaign.post(
        campaign.request("alice", "alice-laptop", [later]), token("alice"), "alice-laptop"
    ).json()
    assert "another device" in answer["refused"][0]["reason"]
    assert campaign.stored("alice")[ana["id"]]["head"] == "alice's, same id as bob's row"


# -- the device's side ---------------------------------------------------------------------


class ExpiredFirst:
    """A session whose current token has expired (a clock that jumped, a token the
    service already refuses): the first request is a 401, the refreshed one passes."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.refreshes = 0

    def id_token(self) -> str:
        return token(self.uid, lifetime=-120, issued_at=time.time() - 3600)

    def refresh_id_token(self) -> str:
        self.refreshes += 1
        return token(self.uid)


def test_a_refused_token_is_refreshed_once_then_the_request_goes_through(campaign):
    session = ExpiredFirst("alice")
    answer = HttpIngest(campaign.server.url, tokens=session).submit(
        campaign.request("alice", "alice-phone", [row(1)])
    )
    assert answer.state == "accepted" and session.refreshes == 1
    # a refresh that still hands a refused token: AuthError, not a loop
    stale = MockIdTokens("alice", PROJECT)
    stale.stale_refresh = True
    with pytest.raises(AuthError, match="expired"):
        HttpIngest(campaign.server.url, tokens=ExpiredAlways(stale)).submit(
            campaign.request("alice", "alice-phone", [row(2)])
        )
    assert stale.forced == 1


class ExpiredAlways(ExpiredFirst):
    def __init__(self, inner: MockIdTokens) -> None:
        super().__init__(inner.uid)
        self.inner = inner

    def refresh_id_token(self) -> str:
        return self.inner.refresh_id_token()


def test_a_user_signed_out_sends_nothing(campaign):
    session = MockIdTokens("alice", PROJECT)
    session.revoked = True
    with pytest.raises(AuthError):
        HttpIngest(campaign.server.url, tokens=session).submit(
            campaign.request("alice", "alice-phone", [row(1)])
        )
    assert campaign.stored("alice") == {}


# -- the queue: the rules prove the user, the ingestor checks the device -------------------------


def test_a_users_queue_takes_requests_only_from_devices_registered_in_that_root(campaign):
    root = campaign.root("alice")
    queue = StoreIngest(root)
    mine = campaign.request("alice", "alice-phone", [row(1, head="Ana")])
    queue.submit(mine, DeviceRecord("alice-phone", name="phone"))
    # written to alice's root (as her rules allow) by her phone, naming a device of no one
    ghost = campaign.request("alice", "ghost", [row(2, head="ghost")])
    queue.submit(ghost, DeviceRecord("alice-phone", name="phone"))
    decided = {r.bundle: r for r in campaign.ingestor.for_user("alice").poll()}
    assert decided[mine.bundle].state == "accepted"
    assert decided[ghost.bundle].state == "rejected"
    assert "not registered to user alice" in decided[ghost.bundle].reason
    assert [d["head"] for d in campaign.stored("alice").values()] == ["Ana"]
    assert queue.submit(ghost, DeviceRecord("alice-phone")).state == "rejected"


def test_signed_in_callers_need_an_ingestor_of_users(tmp_path):
    from replicator import ConfigurationError

    blobs, store = DirectoryBlobStore(tmp_path / "b"), EmbeddedRemote(tmp_path / "r")
    plain = Ingestor(blobs, store, [Household])
    with pytest.raises(ConfigurationError, match="users="):
        plain.serve(auth=SignedInCallers(IdTokenVerifier(PROJECT, emulator=True)))
    with pytest.raises(ConfigurationError, match="users="):
        plain.for_user("alice")


# -- real users of the Auth emulator ---------------------------------------------------------


@pytest.fixture
def users(auth_emulator: Any, tmp_path: Path) -> Any:
    from replicator.auth import FirebaseAuth, MemoryTokenStore
    from replicator.auth.accounts import AccountStatus

    auth_emulator.reset()
    accounts = AccountStatus(auth_emulator.project, emulator_host=auth_emulator.host, ttl=0)
    verifier = IdTokenVerifier(auth_emulator.project, accounts=accounts)
    made = Campaign(tmp_path, lambda uid: EmbeddedRemote(tmp_path / f"root-{uid}.db"), verifier)
    auth = FirebaseAuth(emulator_host=auth_emulator.host, store=MemoryTokenStore())
    yield made, auth, auth_emulator, accounts
    auth.close()
    accounts.close()
    made.close()


def test_signed_in_users_devices_send_to_their_own_roots_and_a_disabled_user_is_cut_off(users):
    campaign, auth, emulator, accounts = users
    ada = auth.sign_up(f"ada-{time.time_ns()}@example.org", "correct horse battery")
    bo = auth.sign_up(f"bo-{time.time_ns()}@example.org", "correct horse battery")
    laptop, phone = campaign.device("ada-laptop", ada), campaign.device("bo-phone", bo)
    with laptop.bound():
        Household.create(head="Ada's")
    with phone.bound():
        Household.create(head="Bo's")
    assert laptop.sync().bundled == phone.sync().bundled == {"households": 1}
    assert [d["head"] for d in campaign.stored(ada.uid).values()] == ["Ada's"]
    assert [d["head"] for d in campaign.stored(bo.uid).values()] == ["Bo's"]
    # an administrator disables Bo: his still-valid ID token is refused at once
    emulator.disable_user(bo.uid)
    request = campaign.request(bo.uid, "bo-phone", [row(1)])
    answer = campaign.post(request, bo.id_token(), "bo-phone")
    assert answer.status_code == 401 and "disabled" in answer.json()["error"], answer.text
    with phone.bound():
        Household.create(head="after")
    with pytest.raises(AuthError, match="disabled"):  # refused, then its refresh too
        phone.sync()
    assert len(campaign.stored(bo.uid)) == 1 and phone.pending_count() == 1
    emulator.delete_user(bo.uid)
    answer = campaign.post(request, bo.id_token(), "bo-phone")
    assert answer.status_code == 401 and "deleted" in answer.json()["error"]
    with laptop.bound():
        Household.create(head="Ada's second")
    assert laptop.sync().bundled == {"households": 1}  # Ada is not affected
    assert accounts.lookups >= 4


def test_revoked_sessions_are_refused_and_answers_are_kept_ttl_seconds(users):
    from replicator.auth.accounts import AccountStatus

    campaign, auth, emulator, _ = users
    cy = auth.sign_up(f"cy-{time.time_ns()}@example.org", "correct horse battery")
    held = cy.id_token()
    kept = AccountStatus(emulator.project, emulator_host=emulator.host, ttl=3600)
    try:
        claims_time = int(time.time())
        assert kept(cy.uid, claims_time) == kept(cy.uid, claims_time) == ""
        assert kept.lookups == 1  # the second answer came from what was kept
        # the backend revokes Cy's sessions (Admin SDK revoke_refresh_tokens sets validSince)
        emulator.revoke_sessions(cy.uid, at=time.time() + 5)
        request = campaign.request(cy.uid, "cy-phone", [row(1)])
        answer = campaign.post(request, held, "cy-phone")
        assert answer.status_code == 401 and "revoked" in answer.json()["error"], answer.text
        assert kept(cy.uid, claims_time) == ""  # kept for its ttl: the cost of one lookup
    finally:
        kept.close()
    assert campaign.stored(cy.uid) == {}


def test_the_guides_example_runs(tmp_path):
    import re
    import subprocess
    import sys

    guide = (Path(__file__).resolve().parents[2] / "docs/guides/ingest-service.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    assert blocks
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert 'alice ["alice\'s household"]' in done.stdout


def test_through_the_queue_under_the_generated_rules_each_user_is_served_in_their_root(
    tmp_path, as_users
):
    """Devices signed in as alice and bob queue their requests in their own roots
    (``StoreIngest``, under the rules ``replicator rules`` generates); each user's
    ingestor takes them from there and applies them there. Bob cannot queue in
    alice's root."""
    from replicator import AccessDeniedError
    from replicator.stores.firestore import FirestoreRemote

    users = as_users([Household], upload_only=["households"], ingest_queue=True)
    admin = users.service_client()
    bucket = DirectoryBlobStore(tmp_path / "bucket")
    ingestor = Ingestor(
        bucket,
        FirestoreRemote(admin, "operators/main"),
        [Household],
        users=lambda uid: FirestoreRemote(admin, f"users/{uid}"),
    )
    devices = {}
    for uid in ("alice", "bob"):
        remote = users.remote(uid)
        mine = DirectoryBlobStore(tmp_path / "bucket" / "users" / uid)
        db = peewee.SqliteDatabase(str(tmp_path / f"{uid}.db"))
        devices[uid] = Replicator(
            db, [Household], remote, device_name=f"{uid}-phone",
            bundles=Bundles(mine, StoreIngest(remote), [Household]),
        )  # fmt: skip
        with devices[uid].bound():
            Household.create(head=f"{uid}'s")
        assert devices[uid].sync().bundles_waiting == 1
    for uid in ("alice", "bob"):
        assert [r.state for r in ingestor.for_user(uid).poll()] == ["accepted"]
        assert devices[uid].sync().bundled == {"households": 1}
        root = FirestoreRemote(admin, f"users/{uid}")
        assert [d.data["head"] for d in root.pull("households", None, 10).docs] == [f"{uid}'s"]
    # bob, signed in, names alice's root: the rules refuse his request
    intruder = StoreIngest(users.remote("bob", root="users/alice"))
    request = IngestRequest("b-x", "bundles/bob-phone/b-x.ndjson.gz", "0" * 64, 1, 1,
                            "households", "bob-phone")  # fmt: skip
    with pytest.raises(AccessDeniedError):
        intruder.submit(request, DeviceRecord("bob-phone"))
    assert users.gate.refused == {} and set(users.gate.users) == {"alice", "bob"}  # no admin


def test_a_device_name_of_any_text_travels_in_its_header(campaign):
    # an outbox's BundleSink names its device after the host, which may be any text
    device = "tablette de l'équipe 3"
    request = campaign.request("alice", device, [row(1)])
    answer = HttpIngest(campaign.server.url, tokens=MockIdTokens("alice", PROJECT)).submit(request)
    assert answer.state == "accepted", answer
    assert [d["updatedBy"] for d in campaign.stored("alice").values()] == [device]


def test_a_users_ingestor_serves_no_other_caller(campaign):
    from replicator import ConfigurationError
    from replicator.bundles import Caller

    alices = campaign.ingestor.for_user("alice")
    assert campaign.ingestor.for_user("alice") is alices  # kept, one root per user
    request = campaign.request("alice", "p", [row(1)])
    for caller in (Caller("p", "bob"), Caller("p")):
        with pytest.raises(ConfigurationError, match="serves that user only"):
            alices.submit(request, caller)
    assert campaign.stored("alice") == {} and campaign.stored("bob") == {}
    assert alices.submit(request, Caller("p", "alice")).state == "accepted"
