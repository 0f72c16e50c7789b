"""A device reaches Firestore as its signed-in user, never as admin.

Every test here goes through the TokenGate (``as_users``): the emulator's admin
token is refused there, so a pass means the calls really carried the user's
ID token and the rules really ran.
"""

from __future__ import annotations

import peewee
import pytest

from replicator import AccessDeniedError, ConfigurationError, RemoteError, Replicator
from replicator.stores.firestore_dial import redial
from replicator.stores.firestore_user import UserClient, UserFirestoreRemote
from replicator.testing import MockIdTokens
from tests.helpers import snapshot_rows
from tests.models import MODELS, Note


def _device(tmp_path, name, remote):
    db = peewee.SqliteDatabase(str(tmp_path / f"{name}.db"), pragmas={"foreign_keys": 1})
    return Replicator(db, MODELS, remote, device_name=name)


def test_every_call_carries_the_users_token_and_the_rules_let_it_through(tmp_path, as_users):
    users = as_users()
    phone = _device(tmp_path, "phone", users.remote("alice"))
    with phone.bound():
        Note.create(title="mine")
    phone.sync()
    laptop = _device(tmp_path, "laptop", users.remote("alice"))  # signs in on its own
    laptop.sync()
    assert snapshot_rows(laptop) == snapshot_rows(phone)
    assert users.gate.refused == {}
    assert set(users.gate.users) == {"alice"} and users.gate.users["alice"] >= 6
    record = {d.name: d for d in phone.remote.devices()}
    assert set(record) == {"phone", "laptop"}


def test_a_client_acting_as_admin_is_refused_where_a_test_acts_as_users(as_users):
    """The guard of every test acting as users: admin never gets through the gate."""
    from google.api_core import exceptions as gexc
    from google.cloud import firestore

    from replicator.stores.firestore import FirestoreRemote

    users = as_users()
    admin = firestore.Client(project=users.project)  # sends 'Bearer owner' to the emulator
    with pytest.raises(gexc.PermissionDenied, match="admin token"):
        admin.document("users/alice/note/x").get()
    with pytest.raises(RemoteError, match="admin token"):
        FirestoreRemote(admin, "users/alice").devices()
    assert users.gate.refused["the emulator's admin token ('Bearer owner')"] == 2


def test_a_client_that_would_send_the_emulators_admin_header_is_refused(firestore_emulator):
    """google-cloud-firestore adds 'authorization: Bearer owner' under the emulator, even
    with user credentials: a user remote refuses any client that would send it."""
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_client import BaseClient

    tokens = MockIdTokens("alice", "demo-replicator")
    plain = firestore.Client(project="demo-replicator")
    assert ("authorization", "Bearer owner") in plain._rpc_metadata
    with pytest.raises(ConfigurationError, match="Bearer owner"):
        UserFirestoreRemote(tokens, client=plain)

    class Regressed(UserClient):  # a library version that puts the header back
        _rpc_metadata = BaseClient._rpc_metadata

    with pytest.raises(ConfigurationError, match="Bearer owner"):
        UserFirestoreRemote(tokens, client=Regressed(tokens, "demo-replicator"))
    other = MockIdTokens("bob", "demo-replicator")
    with pytest.raises(ConfigurationError, match="ID token"):
        UserFirestoreRemote(tokens, client=UserClient(other, "demo-replicator"))
    remote = UserFirestoreRemote(tokens, "demo-replicator")
    assert remote.root == "users/alice"
    assert not [k for k, _ in remote.client._rpc_metadata if k.lower() == "authorization"]


def test_the_rules_refusing_a_user_is_access_denied_naming_the_root(tmp_path, as_users):
    users = as_users()
    trespasser = _device(tmp_path, "t", users.remote("alice", root="users/bob"))
    with trespasser.bound():
        Note.create(title="into bob's data")
    with pytest.raises(AccessDeniedError, match="users/bob") as info:
        trespasser.sync()
    assert not info.value.retryable and "replicator rules" in info.value.hint
    assert "alice" in info.value.message
    assert trespasser.dirty_counts()["note"] == 1  # nothing local lost
    assert users.gate.refused == {}  # a refusal of the rules, not of the token


def test_a_redialed_channel_still_acts_as_the_user(tmp_path, as_users):
    """After an outage the remote dials a fresh channel (firestore_dial.redial); it must
    carry the user's token as the first one did, never the admin header."""
    users = as_users()
    device = _device(tmp_path, "d", users.remote("alice"))
    device.sync()
    assert redial(device.remote.client) is True
    with device.bound():
        Note.create(title="after the redial")
    device.sync()
    assert users.gate.refused == {}
    assert users.remote("alice").all_docs("note").popitem()[1].data["title"] == "after the redial"


def test_the_credentials_put_the_token_in_the_authorization_header():
    """In production the client's channel asks the credentials for the header of every
    call (google-auth's gRPC plugin calls before_request): the source's current token."""
    from replicator.stores.firestore_user import IdTokenCredentials

    tokens = MockIdTokens("alice", "p", lifetime=3600)
    credentials = IdTokenCredentials(tokens)
    headers: dict[str, str] = {}
    credentials.before_request(None, "Commit", "https://firestore.googleapis.com", headers)
    assert headers == {"authorization": f"Bearer {tokens.id_token()}"}
    assert credentials.expiry is not None and credentials.valid
    tokens.revoked = True
    with pytest.raises(Exception, match="revoked"):
        credentials.before_request(None, "Commit", "u", {})
    assert credentials.take_failure() is not None and credentials.take_failure() is None
